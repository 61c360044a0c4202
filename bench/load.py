"""Load test: N clinicians grading at once against the production server (gunicorn), on loopback.

Starts gunicorn with production settings (DJANGO_ENV=production, DEBUG off, secure cookies; the
load generator plays a TLS-terminating proxy by sending ``X-Forwarded-Proto: https``) on a database
filled by ``manage.py seed_scale``. Each simulated clinician logs in (scale-grader01..N) and loops:
"Next image" (POST, claims an image), the grading page, the photograph, save a grade (POST) and the
page the save redirects to, then waits so that one image takes ``--think`` seconds. After
``--duration`` seconds it reports p50/p95/p99 per step, errors and requests/s, and checks in the
database that every acknowledged grade is stored exactly once and that no image was served to two
clinicians (the seeded workbench needs one grade per image).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wt_scale_bench FUNDUS_SCALE_PASSWORD=... \\
        .venv/bin/python bench/load.py --clinicians 50 --think 8 --duration 120 --label 100k

The load generator runs on the same 2 cores as the server and PostgreSQL (as in the issue's
measurement). The baseline, measured in the same run before the load starts, is one clinician's
"Next image" and grading page (10 rounds, nobody else on): the report gives p95 under load / that.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ("next", "grading_page", "photo", "save", "after_save")
ALL_STEPS = ("login", *STEPS)
TARGET_P95_MS = 150.0
# The server runs with the production settings of grading/gunicorn_conf.py (5 sync workers on 2
# cores); --workers / --threads override them for experiments.


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clinicians", type=int, default=50)
    parser.add_argument("--think", type=float, default=8.0, help="seconds per image")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--workers", type=int, default=None, help="default: gunicorn_conf.py")
    parser.add_argument("--threads", type=int, default=None, help="default: gunicorn_conf.py")
    parser.add_argument("--label", required=True, help="e.g. 10k or 100k (names the result file)")
    parser.add_argument("--password", default=os.environ.get("FUNDUS_SCALE_PASSWORD", ""))
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


class Browser:
    """One clinician's browser: a keep-alive connection, its cookies, its CSRF token."""

    def __init__(self, port: int):
        self.port = port
        self.host = f"localhost:{port}"
        self.cookies: dict[str, str] = {}
        self.connection: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes, float]:
        headers = {
            "Host": self.host,
            "X-Forwarded-Proto": "https",
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
        }
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = f"https://{self.host}"
            headers["Referer"] = f"https://{self.host}{path}"
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            started = time.perf_counter()
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
                continue
            elapsed = (time.perf_counter() - started) * 1000
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key.strip()] = rest.split(";", 1)[0]
            return response.status, dict(response.getheaders()), data, elapsed
        raise RuntimeError("unreachable")

    def csrf(self) -> str:
        return self.cookies.get("csrftoken", "")


def location_path(headers: dict[str, str]) -> str:
    location = headers.get("Location", "")
    return urllib.parse.urlsplit(location).path


def login(browser: Browser, username: str, password: str) -> None:
    status, _, body, _ = browser.request("GET", "/accounts/login/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    if status != 200 or token is None:
        raise RuntimeError(f"login page answered {status}")
    status, headers, _, _ = browser.request(
        "POST",
        "/accounts/login/",
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": token.group(1).decode(),
        },
    )
    if status != 302:
        raise RuntimeError(f"login of {username} failed ({status})")


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.served: dict[str, list[int]] = defaultdict(list)
        self.acknowledged: list[tuple[str, int]] = []
        self.requests = 0

    def time(self, step: str, ms: float) -> None:
        with self.lock:
            self.times[step].append(ms)
            self.requests += 1

    def error(self, step: str, message: str) -> None:
        with self.lock:
            self.errors[step].append(message)
            self.requests += 1


def clinician_loop(
    *,
    username: str,
    password: str,
    port: int,
    think: float,
    duration: float,
    recorder: Recorder,
    start_delay: float,
    logged_in: threading.Barrier,
) -> None:
    rng = random.Random(username)
    browser = Browser(port)
    try:
        started = time.perf_counter()
        login(browser, username, password)
        recorder.time("login", (time.perf_counter() - started) * 1000)
    except Exception as error:  # reported, the clinician stops
        recorder.error("login", f"{username}: {error}")
        logged_in.wait()
        return
    # Everyone logs in first (a password hash costs ~0.5 s of CPU by design: fifty at once would
    # measure the start of a shift, not grading); then the clinicians start, spread over one image.
    logged_in.wait()
    time.sleep(start_delay)
    stop_at = time.monotonic() + duration
    previous = ""
    while time.monotonic() < stop_at:
        round_started = time.monotonic()
        try:
            form = {"csrfmiddlewaretoken": browser.csrf()}
            if previous:
                form["from"] = previous
            status, headers, _, ms = browser.request("POST", "/worklist/next/", form)
            target = location_path(headers)
            if status != 302 or not target.startswith("/grade/"):
                recorder.error("next", f"{status} -> {target or 'no redirect'}")
                time.sleep(think)
                continue
            recorder.time("next", ms)
            image_id = int(target.rstrip("/").rsplit("/", 1)[-1])
            with recorder.lock:
                recorder.served[username].append(image_id)
            for step, path in (("grading_page", target), ("photo", f"/images/{image_id}/file")):
                status, _, _, ms = browser.request("GET", path)
                if status == 200:
                    recorder.time(step, ms)
                else:
                    recorder.error(step, f"{status}")
            # The clinician looks at the photograph before grading (most of the think time).
            remaining = think * rng.uniform(0.8, 1.2) - (time.monotonic() - round_started)
            time.sleep(max(0.0, remaining))
            if time.monotonic() >= stop_at:
                break
            grade = str(rng.choice([0, 0, 0, 1, 2, 2, 3, 4]))
            form = {"csrfmiddlewaretoken": browser.csrf(), "grade": grade, "notes": ""}
            status, headers, _, ms = browser.request("POST", target, form)
            if status != 302:
                recorder.error("save", f"{status}")
                continue
            recorder.time("save", ms)
            status, _, body, ms = browser.request("GET", location_path(headers))
            if status == 200 and b"Grade saved" in body:
                recorder.time("after_save", ms)
                with recorder.lock:
                    recorder.acknowledged.append((username, image_id))
            else:
                recorder.error("after_save", f"{status}, no 'Grade saved'")
            previous = ""  # graded: nothing to release on the next "Next image"
        except Exception as error:
            recorder.error("exception", f"{type(error).__name__}: {error}")
            time.sleep(1)


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "n": len(values),
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1], 1),
    }


def server_shape(args: argparse.Namespace) -> str:
    """Workers x threads of the server as started: the flags, else grading/gunicorn_conf.py."""
    sys.path.insert(0, str(REPO))
    from grading import gunicorn_conf

    workers = args.workers or gunicorn_conf.workers
    threads = args.threads or gunicorn_conf.threads
    return f"{workers} workers x {threads} thread{'s' if threads > 1 else ''}"


def server_start(args: argparse.Namespace, env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [
        str(REPO / ".venv" / "bin" / "gunicorn"),
        "grading.wsgi",
        "--config",
        "python:grading.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{args.port}",
        "--access-logfile",
        "-",
        "--log-level",
        "warning",
    ]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(120):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            connection.request("GET", "/healthz", headers={"Host": f"localhost:{args.port}"})
            if connection.getresponse().status < 500:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            sys.exit(f"gunicorn exited ({process.returncode}); see {log}")
        time.sleep(0.5)
    process.terminate()
    sys.exit(f"gunicorn did not answer on port {args.port}; see {log}")


def baseline(args: argparse.Namespace, password: str) -> dict[str, dict]:
    """One clinician alone: "Next image" and the grading page, 10 rounds (skipping, not grading)."""
    browser = Browser(args.port)
    login(browser, "scale-grader01", password)
    times: dict[str, list[float]] = defaultdict(list)
    previous = ""
    for _ in range(11):
        form = {"csrfmiddlewaretoken": browser.csrf()}
        if previous:
            form["from"] = previous
        _, headers, _, ms_next = browser.request("POST", "/worklist/next/", form)
        target = location_path(headers)
        _, _, _, ms_page = browser.request("GET", target)
        previous = target.rstrip("/").rsplit("/", 1)[-1]
        times["next"].append(ms_next)
        times["grading_page"].append(ms_page)
    # The first round warms the server's caches and connections.
    return {step: percentiles(values[1:]) for step, values in times.items()}


def verify(recorder: Recorder, started_at: float) -> dict[str, int]:
    """Every acknowledged grade stored exactly once; no image served to two clinicians."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import datetime as dt

    from django.db.models import Count

    from grading.models import Grade

    since = dt.datetime.fromtimestamp(started_at, tz=dt.UTC)
    stored = (
        Grade.objects.filter(
            kind=Grade.Kind.GRADER, created_at__gte=since, grader__username__startswith="scale-"
        )
        .values_list("grader__username", "image_id")
        .order_by()
    )
    stored_pairs = defaultdict(int)
    for pair in stored:
        stored_pairs[pair] += 1
    acknowledged = set(recorder.acknowledged)
    lost = [pair for pair in acknowledged if stored_pairs.get(pair, 0) == 0]
    duplicated = [pair for pair, n in stored_pairs.items() if n > 1]
    graded_twice = (
        Grade.objects.filter(kind=Grade.Kind.GRADER, created_at__gte=since)
        .values("image_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    owners: dict[int, set[str]] = defaultdict(set)
    for username, image_ids in recorder.served.items():
        for image_id in image_ids:
            owners[image_id].add(username)
    served_to_two = sum(1 for users in owners.values() if len(users) > 1)
    return {
        "grades_acknowledged": len(acknowledged),
        "grades_stored": sum(stored_pairs.values()),
        "grades_lost": len(lost),
        "grades_stored_twice": len(duplicated),
        "images_graded_by_two": graded_twice,
        "images_served_to_two_clinicians": served_to_two,
    }


def main() -> None:
    args = parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to a database filled by `manage.py seed_scale`.")
    if len(args.password) < 8:
        sys.exit("Give the scale-* password: --password or FUNDUS_SCALE_PASSWORD.")
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_ENV": "production",
            "SECRET_KEY": env.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "localhost",
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_HSTS_SECONDS": "0",
            "SECURE_HSTS_PRELOAD": "false",
        }
    )
    log = REPO / "var" / f"load-gunicorn-{args.port}.log"
    log.parent.mkdir(exist_ok=True)
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=REPO,
        env=env,
        check=True,
    )
    server = server_start(args, env, log)
    try:
        base = baseline(args, args.password)
        print(
            f"baseline, one clinician alone: next p50 {base['next']['p50']} ms, grading page "
            f"p50 {base['grading_page']['p50']} ms"
        )
        recorder = Recorder()
        started_at = time.time()
        loop_started: list[float] = []
        logged_in = threading.Barrier(
            args.clinicians, action=lambda: loop_started.append(time.time()), timeout=600
        )
        threads = [
            threading.Thread(
                target=clinician_loop,
                kwargs={
                    "username": f"scale-grader{i:02d}",
                    "password": args.password,
                    "port": args.port,
                    "think": args.think,
                    "duration": args.duration,
                    "recorder": recorder,
                    "start_delay": args.think * i / args.clinicians,
                    "logged_in": logged_in,
                },
                daemon=True,
            )
            for i in range(1, args.clinicians + 1)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.duration + 600)
        elapsed = time.time() - (loop_started[0] if loop_started else started_at)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    checks = verify(recorder, started_at)
    steps = {step: percentiles(recorder.times[step]) for step in ALL_STEPS}
    errors = {step: len(messages) for step, messages in recorder.errors.items()}
    result = {
        "label": args.label,
        "clinicians": args.clinicians,
        "think_seconds": args.think,
        "duration_seconds": round(elapsed, 1),  # the grading loop, after everyone logged in
        "server": f"gunicorn {server_shape(args)}, production settings",
        "database": os.environ["DATABASE_URL"].split("://", 1)[0],
        "cpus": os.cpu_count(),
        "baseline_one_clinician": base,
        "steps_ms": steps,
        "ratio_p95_to_baseline_p50": {
            step: round(steps[step]["p95"] / base[step]["p50"], 1)
            for step in ("next", "grading_page")
            if steps[step].get("n")
        },
        "errors": errors,
        "error_samples": {step: messages[:5] for step, messages in recorder.errors.items()},
        "requests": recorder.requests - len(recorder.times["login"]),
        "requests_per_second": round(
            (recorder.requests - len(recorder.times["login"])) / elapsed, 1
        ),
        "checks": checks,
        "target_p95_ms": TARGET_P95_MS,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(f"{'step':<14} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'errors':>7}")
    for step in ALL_STEPS:
        row = steps[step]
        print(
            f"{step:<14} {row.get('n', 0):>6} {row.get('p50', '-'):>8} {row.get('p95', '-'):>8} "
            f"{row.get('p99', '-'):>8} {errors.get(step, 0):>7}"
        )
    other = {k: v for k, v in errors.items() if k not in ALL_STEPS}
    if other:
        print(f"other errors: {other} e.g. {result['error_samples']}")
    print(f"{result['requests_per_second']} requests/s; checks: {json.dumps(checks)}")
    out = args.out or REPO / "bench" / "results" / f"load-{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if checks["grades_lost"] or checks["images_served_to_two_clinicians"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
