"""The pip-audit gate fails on findings, honours justifications, and skips loudly when it cannot look anything up."""

from __future__ import annotations

import pytest

from tests.security.audit_dependencies import judge

pytestmark = pytest.mark.unit

VULN = {"id": "PYSEC-2099-1", "aliases": ["CVE-2099-0001"], "fix_versions": ["2.0"], "description": "x"}


def test_a_known_vulnerability_fails_the_gate() -> None:
    verdict = judge({"dependencies": [{"name": "httpx", "version": "1.0", "vulns": [VULN]}]})
    assert verdict.exit_code == 1
    assert "httpx 1.0: PYSEC-2099-1 (fixed in 2.0)" in verdict.message


def test_a_justified_vulnerability_passes_by_id_or_alias() -> None:
    report = {"dependencies": [{"name": "httpx", "version": "1.0", "vulns": [VULN]}]}
    assert judge(report, {"CVE-2099-0001": "we never parse untrusted cookies"}).exit_code == 0
    assert judge(report, {"PYSEC-2099-1": "same"}).exit_code == 0


def test_nothing_looked_up_is_a_visible_skip_not_a_pass() -> None:
    report = {"dependencies": [{"name": "httpx", "skip_reason": "Dependency not found on PyPI"}]}
    verdict = judge(report)
    assert verdict.exit_code == 0
    assert verdict.message.startswith("pip-audit: SKIPPED")


def test_clean_report_counts_the_audited_dependencies() -> None:
    report = {"dependencies": [{"name": "httpx", "version": "1.0", "vulns": []}]}
    assert judge(report).message == "pip-audit: 1 locked dependencies, no known vulnerabilities"
