"""Page latency, query count and memory at scale, on a database filled by ``manage.py seed_scale``.

Every page is requested through Django's test client (the whole middleware stack, templates rendered,
no network) once to warm up and then ``--repeat`` times; the table gives the worst and the median time,
the number of SQL queries of one request and the peak Python memory (tracemalloc) of one request.
CSV exports give the time to the first streamed chunk, the time to read everything and the peak memory
while reading it. The baseline, measured in the same run, is ``/healthz`` (middleware, one query):
the ratio column is page worst / baseline median, so a busy machine moves both.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wt_scale_bench \\
        .venv/bin/python bench/pages.py --label 100k

Target (issue 12): worst of 5 < 150 ms for every page at 100,000 images on PostgreSQL; exports start
streaming within 500 ms. DEBUG is off, as in production.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 150.0
EXPORT_FIRST_BYTE_TARGET_MS = 500.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="e.g. 10k or 100k (names the result file)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default="", help="page names to run, separated by ';'")
    return parser.parse_args()


def setup_django() -> None:
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to a database filled by `manage.py seed_scale`.")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    # What the production workers do after loading the app: the objects of start-up are left
    # out of the cyclic garbage collector's full passes (~110 ms, every few hundred requests).
    from grading.gunicorn_conf import post_worker_init

    post_worker_init(worker=None)


def pages() -> list[tuple[str, str, str, str, dict]]:
    """(name, user, method, url, data): every page the issue names, with realistic parameters."""
    from django.db.models import Count

    from grading.models import Grade, Image, Job, ModelVersion, Patient

    pending = Image.objects.filter(grading_state="pending").order_by("uploaded_at", "id")
    confirmed = (
        Image.objects.filter(grading_state="confirmed", confirmation_method="adjudication")
        .order_by("id")
        .first()
    )
    patient = Patient.objects.annotate(n=Count("images")).filter(n__gt=4).order_by("pk").first()
    retired = ModelVersion.objects.get(name="scale-v1")
    active = ModelVersion.objects.get(name="scale-v2")
    grader_id = (
        Grade.objects.filter(kind="grader").values_list("grader_id", flat=True).order_by("id")[0]
    )
    job = Job.objects.order_by("-id").first()
    grade_image = pending[min(500, pending.count() - 1)]
    adjudication = Image.objects.filter(grading_state="adjudication").order_by("id").first()
    g, r, a = "grader", "reviewer", "admin"
    return [
        ("healthz (baseline)", g, "GET", "/healthz", {}),
        ("home", g, "GET", "/", {}),
        ("home (reviewer)", r, "GET", "/", {}),
        ("home (admin)", a, "GET", "/", {}),
        ("worklist (oldest)", g, "GET", "/worklist/", {}),
        ("worklist page 40", g, "GET", "/worklist/?page=40", {}),
        ("worklist (random)", "grader-random", "GET", "/worklist/", {}),
        ("worklist (uncertain)", "grader-uncertain", "GET", "/worklist/", {}),
        ("next image (claim)", g, "POST", "/worklist/next/", {"from": "@current"}),
        ("next image (random)", "grader-random", "POST", "/worklist/next/", {"from": "@current"}),
        (
            "next image (uncertain)",
            "grader-uncertain",
            "POST",
            "/worklist/next/",
            {"from": "@current"},
        ),
        ("grading page", g, "GET", f"/grade/{grade_image.pk}/", {}),
        ("image history", r, "GET", f"/images/{confirmed.pk}/", {}),
        ("patients", g, "GET", "/patients/", {}),
        ("patients search", g, "GET", "/patients/", {"q": "SCALE-2026-0001"}),
        ("patients page 200", g, "GET", "/patients/", {"page": "200"}),
        ("a patient", g, "GET", f"/patients/{patient.pk}/", {}),
        ("adjudication queue", r, "GET", "/adjudication/", {}),
        ("adjudicate an image", r, "GET", f"/adjudicate/{adjudication.pk}/", {}),
        ("review (default)", r, "GET", "/review/", {}),
        ("review (htmx filter)", r, "GET", "/review/", {"confirmed": "2", "_htmx": "1"}),
        (
            "review v1, >= 2 apart",
            r,
            "GET",
            "/review/",
            {"version": retired.pk, "disagreement": "2"},
        ),
        ("review by grader", r, "GET", "/review/", {"grader": grader_id}),
        (
            "review dates, by patient",
            r,
            "GET",
            "/review/",
            {"date_from": "2024-01-01", "date_to": "2025-06-30", "sort": "patient"},
        ),
        ("review page 100", r, "GET", "/review/", {"page": "100", "sort": "uploaded"}),
        ("review confusion png", r, "GET", "/review/confusion.png", {}),
        ("review qwk png", r, "GET", "/review/qwk-by-month.png", {}),
        ("grader agreement", r, "GET", "/review/graders/", {}),
        ("grader agreement (indep.)", r, "GET", "/review/graders/", {"reference": "independent"}),
        ("registry", a, "GET", "/models/", {}),
        ("a model version", a, "GET", f"/models/{active.pk}/", {}),
        ("compare two versions", a, "GET", "/models/compare/", {"a": retired.pk, "b": active.pk}),
        ("jobs", a, "GET", "/jobs/", {}),
        ("a job", a, "GET", f"/jobs/{job.pk}/", {}),
        ("upload form", a, "GET", "/upload/", {}),
        ("grading settings", a, "GET", "/settings/grading/", {}),
        ("protocol settings", a, "GET", "/settings/protocol/", {}),
        ("quality queue", a, "GET", "/quality/", {}),
        ("certification", g, "GET", "/certification/", {}),
        ("audit log", a, "GET", "/audit/", {}),
        ("api images", r, "GET", "/api/images/", {}),
        (
            "api images pending p50",
            r,
            "GET",
            "/api/images/",
            {"grading_state": "pending", "page": "50"},
        ),
        ("api model versions", r, "GET", "/api/model-versions/", {}),
        ("api predictions", r, "GET", f"/api/model-versions/{active.name}/predictions/", {}),
        (
            "api predictions p500",
            r,
            "GET",
            f"/api/model-versions/{active.name}/predictions/",
            {"page": "500"},
        ),
    ]


def main() -> None:
    args = parse_args()
    setup_django()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from grading.models import Image

    setup_test_environment()
    users = {
        "grader": User.objects.get(username="scale-grader01"),
        "grader-random": User.objects.get(username="scale-grader02"),
        "grader-uncertain": User.objects.get(username="scale-grader03"),
        "reviewer": User.objects.get(username="scale-reviewer"),
        "admin": User.objects.get(username="scale-admin"),
    }
    clients = {}
    for key, user in users.items():
        clients[key] = Client()
        clients[key].force_login(user)
    clients["grader-random"].get("/worklist/", {"order": "random"})
    clients["grader-uncertain"].get("/worklist/", {"order": "uncertain"})
    current: dict[str, str] = {}

    only = {name.strip() for name in args.only.split(";") if name.strip()}
    images = Image.objects.count()
    print(
        f"database: {connection.vendor}, {images:,} images; {args.repeat} timed requests per page "
        f"after one warm-up; {os.cpu_count()} CPUs (shared), {platform.python_version()}"
    )
    print(f"{'page':<28} {'worst ms':>9} {'median':>8} {'x base':>7} {'queries':>8} {'py peak':>9}")
    results = []
    baseline_ms = None
    for name, who, method, url, data in pages():
        if only and name not in only and not name.startswith("healthz"):
            continue
        client = clients[who]
        headers = {}
        data = dict(data)
        if data.pop("_htmx", None):
            headers["HTTP_HX_REQUEST"] = "true"

        def request(client=client, who=who, method=method, url=url, data=data, headers=headers):
            payload = dict(data)
            if payload.get("from") == "@current":
                payload["from"] = current.get(who, "")
            if method == "POST":
                response = client.post(url, payload, **headers)
                location = response.get("Location", "")
                if "/grade/" in location:
                    current[who] = location.rstrip("/").rsplit("/", 1)[-1]
            else:
                response = client.get(url, payload, **headers)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            return response.status_code, len(body)

        request()  # warm-up
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            status, size = request()
            times.append((time.perf_counter() - started) * 1000)
        queries: list[str] = []

        def count_query(execute, sql, params, many, context, queries=queries):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count_query):
            request()
        tracemalloc.start()
        request()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        worst, median = max(times), statistics.median(times)
        if baseline_ms is None:
            baseline_ms = median
        row = {
            "page": name,
            "url": url,
            "status": status,
            "bytes": size,
            "worst_ms": round(worst, 1),
            "median_ms": round(median, 1),
            "times_ms": [round(t, 1) for t in times],
            "ratio_to_baseline": round(worst / baseline_ms, 1),
            "queries": len(queries),
            "python_peak_mb": round(peak / 1e6, 2),
            "under_target": worst < TARGET_MS,
        }
        results.append(row)
        flag = (
            ""
            if worst < TARGET_MS and status < 400
            else "  <-- over"
            if status < 400
            else "  <-- status"
        )
        print(
            f"{name:<28} {worst:>9.1f} {median:>8.1f} {worst / baseline_ms:>7.1f} "
            f"{len(queries):>8} {peak / 1e6:>7.2f}MB  {status}{flag}"
        )

    exports = []
    if not only or any(name.startswith("export") for name in only):
        client = clients["reviewer"]
        for name, url in (
            ("export grades", "/export/grades.csv"),
            ("export predictions", "/export/predictions.csv"),
        ):
            tracemalloc.start()
            started = time.perf_counter()
            response = client.get(url)
            stream = iter(response.streaming_content)
            first = next(stream)
            first_ms = (time.perf_counter() - started) * 1000
            total = len(first) + sum(len(chunk) for chunk in stream)
            total_s = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            exports.append(
                {
                    "export": name,
                    "first_chunk_ms": round(first_ms, 1),
                    "total_s": round(total_s, 2),
                    "bytes": total,
                    "python_peak_mb": round(peak / 1e6, 2),
                    "under_target": first_ms < EXPORT_FIRST_BYTE_TARGET_MS,
                }
            )
            print(
                f"{name:<28} first chunk {first_ms:.0f} ms, all {total / 1e6:.1f} MB in "
                f"{total_s:.1f} s, python peak {peak / 1e6:.2f} MB"
            )

    slowest = max(
        (r for r in results if not r["page"].startswith("healthz")), key=lambda r: r["worst_ms"]
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"slowest page: {slowest['page']} {slowest['worst_ms']} ms (worst of {args.repeat}); "
        f"baseline /healthz median {baseline_ms:.1f} ms; process peak RSS {rss_mb:.0f} MB"
    )
    out = args.out or REPO / "bench" / "results" / f"pages-{connection.vendor}-{args.label}.json"
    out.write_text(
        json.dumps(
            {
                "database": connection.vendor,
                "images": images,
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
                "baseline_healthz_median_ms": round(baseline_ms, 1),
                "target_ms": TARGET_MS,
                "pages": results,
                "exports": exports,
                "slowest": slowest,
                "process_peak_rss_mb": round(rss_mb),
                "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
