"""Single-clinician server time of the grading loop (issue 21, item 5): "Next image", the grading
page, the photograph, save and the page the save redirects to, in-process through Django's test
client with the production settings, on a database filled by ``manage.py seed_scale``. No network
and no gunicorn: what is left is the server's own work per request (views, queries, templates,
middleware). Reports mean / p50 / p95 milliseconds and the queries of each step; ``--profile STEP``
adds the cProfile functions that cost that step the most, summed over the rounds.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wt_scale_bench \\
        .venv/bin/python bench/grading_profile.py --rounds 40 [--profile grading_page] [--out F]

The clinician (``scale-grader02`` by default) grades each image it is given, as in ``bench/load.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import secrets
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STEPS = ("next", "grading_page", "photo", "save", "after_save")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="rounds not counted")
    parser.add_argument("--user", default="scale-grader02")
    parser.add_argument("--profile", choices=STEPS, help="cProfile this step")
    parser.add_argument("--top", type=int, default=35, help="functions listed by --profile")
    parser.add_argument("--sql", choices=STEPS, help="print the queries of this step's last round")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    return parser.parse_args()


def setup() -> None:
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to a database filled by `manage.py seed_scale`.")
    os.environ.update(
        {
            "DJANGO_ENV": "production",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "localhost",
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_HSTS_SECONDS": "0",
            "SECURE_HSTS_PRELOAD": "false",
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


def main() -> int:
    args = parse_args()
    setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.get(username=args.user))
    rng = random.Random(2026)
    times: dict[str, list[float]] = defaultdict(list)
    queries: dict[str, list[int]] = defaultdict(list)
    profiler = cProfile.Profile() if args.profile else None
    last_sql: dict[str, list[str]] = {}

    def timed(
        step: str, counted: bool, method: str, path: str, data: dict[str, str] | None = None
    ) -> Any:
        call = client.post if method == "POST" else client.get
        with CaptureQueriesContext(connection) as captured:
            if profiler is not None and step == args.profile and counted:
                profiler.enable()
            started = time.perf_counter()
            response = call(path, data, secure=True)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
            elapsed = (time.perf_counter() - started) * 1000
            if profiler is not None and step == args.profile and counted:
                profiler.disable()
        if counted:
            times[step].append(elapsed)
            queries[step].append(len(captured))
            last_sql[step] = [q["sql"] for q in captured.captured_queries]
        return response

    for round_number in range(args.warmup + args.rounds):
        counted = round_number >= args.warmup
        response = timed("next", counted, "POST", "/worklist/next/")
        target = response.headers.get("Location", "")
        if response.status_code != 302 or "/grade/" not in target:
            sys.exit(f"'Next image' answered {response.status_code} -> {target!r}")
        image_id = int(target.rstrip("/").rsplit("/", 1)[-1])
        page = timed("grading_page", counted, "GET", target)
        if page.status_code != 200:
            sys.exit(f"grading page answered {page.status_code}")
        timed("photo", counted, "GET", f"/images/{image_id}/file")
        grade = str(rng.choice([0, 0, 0, 1, 2, 2, 3, 4]))
        saved = timed("save", counted, "POST", target, {"grade": grade, "notes": ""})
        if saved.status_code != 302:
            sys.exit(f"save answered {saved.status_code}")
        after = timed("after_save", counted, "GET", saved.headers["Location"])
        if after.status_code != 200 or b"Grade saved" not in after.content:
            sys.exit(f"the page after saving answered {after.status_code} without 'Grade saved'")

    figures = {}
    for step in STEPS:
        ordered = sorted(times[step])
        figures[step] = {
            "n": len(ordered),
            "mean_ms": round(statistics.fmean(ordered), 1),
            "p50_ms": round(ordered[len(ordered) // 2], 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "queries": max(queries[step]),
        }
        print(
            f"{step:13s} mean {figures[step]['mean_ms']:6.1f} ms  p50 {figures[step]['p50_ms']:6.1f}"
            f"  p95 {figures[step]['p95_ms']:6.1f}  queries {figures[step]['queries']}"
        )
    total = sum(f["mean_ms"] for f in figures.values())
    print(f"one image, all five steps: {total:.1f} ms of server time (means)")
    if args.sql:
        for number, sql in enumerate(last_sql[args.sql], 1):
            print(f"{number:3d}. {sql[:400]}")
    if profiler is not None:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(args.top)
        print(stream.getvalue())
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "figures": figures,
                    "total_mean_ms": round(total, 1),
                    "rounds": args.rounds,
                    "machine": {
                        "platform": platform.platform(),
                        "cpu_count": os.cpu_count(),
                        "load_average_at_start": round(os.getloadavg()[0], 2),
                    },
                    "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
