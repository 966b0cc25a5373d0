"""`make lint` step: pip-audit over the locked dependencies (uv.lock), failing on any unjustified vulnerability.

pip-audit needs PyPI's per-version JSON API (the vulnerability database). Where it cannot be reached (an offline
or mirrored machine), nothing can be audited and the step says so and skips, instead of passing silently.
Run: `uv run --frozen python -m tests.security.audit_dependencies`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# Vulnerability id → why it does not affect contentpipe (reviewed; remove once the dependency is upgraded).
JUSTIFIED: dict[str, str] = {}


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    message: str


def judge(report: dict[str, Any], justified: dict[str, str] = JUSTIFIED) -> Verdict:
    """Decide from pip-audit's JSON: fail on unjustified findings; skip when nothing could be looked up."""
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d]
    findings = [
        f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v.get('fix_versions', [])) or 'no release'})"
        for d in audited
        for v in d.get("vulns", [])
        if v["id"] not in justified and not set(v.get("aliases", [])) & set(justified)
    ]
    if findings:
        return Verdict(1, "pip-audit: known vulnerabilities in uv.lock:\n  " + "\n  ".join(findings))
    if dependencies and not audited:
        return Verdict(
            0,
            f"pip-audit: SKIPPED — the vulnerability database is unreachable from here "
            f"({len(skipped)} locked dependencies could not be looked up); CI with network access audits them",
        )
    note = f" ({len(skipped)} not on PyPI: {', '.join(d['name'] for d in skipped[:5])})" if skipped else ""
    return Verdict(0, f"pip-audit: {len(audited)} locked dependencies, no known vulnerabilities{note}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        exported = subprocess.run(
            ["uv", "export", "--frozen", "--format", "requirements-txt", "--no-hashes", "--no-emit-workspace",
             "--all-groups", "--no-header", "-q", "-o", str(requirements)],
            cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if exported.returncode != 0:
            print(f"pip-audit: cannot export uv.lock: {exported.stderr.strip()}", file=sys.stderr)
            return 1
        audit = subprocess.run(
            [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip",
             "-f", "json", "--progress-spinner", "off"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
    try:
        report = json.loads(audit.stdout or "{}")
    except json.JSONDecodeError:
        report = {}
    if not report.get("dependencies"):
        if "Connection" in audit.stderr or "resolve" in audit.stderr.lower() or "timed out" in audit.stderr:
            print("pip-audit: SKIPPED — the vulnerability database is unreachable (network):", file=sys.stderr)
            print("  " + audit.stderr.strip().splitlines()[-1] if audit.stderr.strip() else "", file=sys.stderr)
            return 0
        print(f"pip-audit failed (exit {audit.returncode}):\n{audit.stderr}", file=sys.stderr)
        return 1
    verdict = judge(report)
    print(verdict.message, file=sys.stderr if verdict.exit_code else sys.stdout)
    return verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
