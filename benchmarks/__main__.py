"""`make bench` / `make bench-smoke`: run every row (each in its own process, bounded in time), print one table,
write `.contentpipe/bench/latest.json` (or `smoke.json`).

    uv run python -m benchmarks [--smoke] [--only scheduler,grpc] [--repeat N] [--json PATH]

Exit status: 0 when the harness ran (targets missed are reported, not failed, so a noisy machine does not break
CI); 1 when a row broke (an exception, a timeout, a missing table); `--strict` also fails on a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import psycopg

from benchmarks.harness import REPO, SEED, STATE_DIR, Row, render_table, write_json
from benchmarks.rows import ROWS
from tests.support.postgres import create_database, drop_database

T = TypeVar("T")

# Upper bounds per row process (seconds): full, smoke.
TIMEOUTS = {
    "scheduler": (900, 150),
    "pipelines": (1500, 120),  # with the Temporal baselines (two dev servers, 281 workflows each)
    "generation": (600, 120),
    "posting": (600, 120),
    "footprint": (600, 120),
    "grpc": (300, 120),
    "media": (300, 90),
    "hour": (1500, 180),
}


def run_row(name: str, smoke: bool, repeat: int) -> tuple[list[Row], str]:
    """The row in its own process group on a private database; the group is killed on timeout (no stray service
    processes) and the database is dropped whatever happens. Never raises: a broken row is reported as one."""
    try:
        db_name, db_url = _with_retries(create_database)
    except Exception as exc:
        return [], f"could not create its database: {exc}"
    try:
        return _run_row_process(name, db_url, smoke, repeat)
    except Exception as exc:
        return [], f"{type(exc).__name__}: {exc}"
    finally:
        try:
            _with_retries(lambda: drop_database(db_name))
        except Exception as exc:
            print(f"[bench] could not drop database {db_name}: {exc}", file=sys.stderr, flush=True)


def _with_retries(action: Callable[[], T], attempts: int = 15) -> T:
    """PostgreSQL may be restarting (another suite's chaos test): retry for ~30 s."""
    for attempt in range(attempts):
        try:
            return action()
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(2)  # noqa: TID251 - the runner is sync, no event loop
    raise AssertionError("unreachable")


def _run_row_process(name: str, db_url: str, smoke: bool, repeat: int) -> tuple[list[Row], str]:
    command = [sys.executable, "-m", "benchmarks.rows", name, "--database-url", db_url]
    command += [*(["--smoke"] if smoke else []), *(["--repeat", str(repeat)] if repeat else [])]
    timeout = TIMEOUTS[name][1 if smoke else 0]
    env = {**os.environ, "PYTHONHASHSEED": str(SEED)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        return [], f"timed out after {timeout} s; stderr tail: {_tail(stderr)}"
    finally:
        _kill_group(proc)  # whatever the row left behind
    for line in reversed(stdout.splitlines()):
        if line.startswith("ROWS "):
            return [Row.from_json(data) for data in json.loads(line[5:])], ""
    return [], f"exit {proc.returncode}: {_tail(stderr) or _tail(stdout)}"


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(text: str | bytes | None, limit: int = 600) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(lines[-4:])[-limit:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition: checks the harness")
    parser.add_argument("--only", default="", help="comma-separated rows: " + ",".join(ROWS))
    parser.add_argument("--repeat", type=int, default=0, help="repetitions per row (default 3, smoke 1)")
    parser.add_argument("--json", default="", help="where to write the results")
    parser.add_argument(
        "--parallel", type=int, default=0, help="rows run at once (default 1; smoke 2: it only checks the harness)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows: {unknown}")
    started = time.monotonic()
    parallel = args.parallel or (2 if args.smoke else 1)

    def one(name: str) -> tuple[list[Row], str]:
        t0 = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        got, error = run_row(name, args.smoke, args.repeat)
        print(
            f"[bench] {name} {'BROKE' if error else 'done'} in {time.monotonic() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        return got, error

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(one, names))
    rows: list[Row] = []
    broken: list[str] = []
    for name, (got, error) in zip(names, results, strict=True):
        if error:
            broken.append(name)
        rows.extend([Row(name, name, "", "", error=error)] if error else got)
    import grpc

    header = (
        f"contentpipe bench{' (smoke: tiny sizes, targets not meaningful)' if args.smoke else ''} — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, {time.monotonic() - started:.0f} s; medians of each row's repetitions"
    )
    print(render_table(rows, header))
    path = args.json or str(STATE_DIR / ("smoke.json" if args.smoke else "latest.json"))
    write_json(
        REPO / path if not os.path.isabs(path) else Path(path),
        rows,
        {
            "time": datetime.now(UTC).isoformat(),
            "smoke": args.smoke,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "seconds": time.monotonic() - started,
        },
    )
    print(f"results: {path}")
    if broken:
        print(f"bench: rows broke: {', '.join(broken)}", file=sys.stderr)
        return 1
    if args.strict and any(r.passed is False for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
