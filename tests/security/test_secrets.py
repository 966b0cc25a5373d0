"""No secret ever shows: not in any service log line of the session, not in any error message a client saw, and
not in clear in any token/secret column of any database (SQLite files and PostgreSQL databases alike).

Runs last in the session (see conftest): it scans every `*.log` and `*.db` under pytest's base temp directory
(the logs of every ServiceProcess any suite started) and the PostgreSQL databases of the security stacks.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.security.fakes import SECRETS, ExternalFakes
from tests.security.stack import STACKS, Stack, user_metadata
from tests.security.tenants import build_world
from tests.support import TEST_JWT_SECRET

pytestmark = pytest.mark.integration

PATTERNS = {
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "bearer credential": re.compile(r"[Bb]earer\s+(?!\[redacted\])[A-Za-z0-9._~+/-]{12,}"),
    "Replicate token": re.compile(r"\br8_[A-Za-z0-9]{20,}"),
    "token/secret field in JSON": re.compile(
        r'"(access_token|refresh_token|id_token|client_secret|api_token|code_verifier|password)"\s*:\s*'
        r'"(?!\[redacted\]|\*+")[^"]{6,}"'
    ),
    "token/secret in a query string or form": re.compile(
        r"\b(access_token|refresh_token|client_secret|code_verifier|oauth_token_secret)=(?!\[redacted\])[^&\s\"']{6,}"
    ),
}
TOKEN_COLUMN = re.compile(r"(token|secret|password|credential)", re.IGNORECASE)
NOT_A_SECRET_COLUMN = re.compile(
    r"(_at$|_time$|expire|^has_|_count$|_kind$|_type$|_hint$|_version$|key_id$|_scopes?$|_url$)", re.IGNORECASE
)


def known_secrets() -> dict[str, str]:
    return {**SECRETS, "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET}


def findings_in(text: str, where: str, issued: set[str] = frozenset()) -> Iterator[str]:  # type: ignore[assignment]
    for label, value in known_secrets().items():
        if value in text:
            yield f"{where}: the value of {label}"
    for token in issued:
        if token in text:
            yield f"{where}: a platform token {token[:16]}…"
    for label, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            yield f"{where}: {label} {match.group(0)[:40]}…"


def looks_encrypted(value: object, issued: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    """Ciphertext (bytes, or an envelope like `v1:kid:<base64 of ≥ 28 bytes>`) as opposed to a token in clear."""
    if value is None or value == "":
        return True
    if isinstance(value, bytes | memoryview):
        return not any(token.encode() in bytes(value) for token in issued)
    text = str(value)
    if any(token in text for token in issued) or any(secret in text for secret in known_secrets().values()):
        return False
    if PATTERNS["JWT"].search(text):
        return False
    core = text.rsplit(":", 1)[-1]
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            if len(decode(core + "=" * (-len(core) % 4))) >= 28:
                return True
        except (binascii.Error, ValueError):
            continue
    return False


def sqlite_token_values(path: Path) -> Iterator[tuple[str, object]]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                if TOKEN_COLUMN.search(column) and not NOT_A_SECRET_COLUMN.search(column):
                    for (value,) in db.execute(f'SELECT "{column}" FROM "{table}"'):  # noqa: S608
                        yield f"{path.name}:{table}.{column}", value
    except sqlite3.Error:
        return
    finally:
        db.close()


def postgres_token_values(url: str) -> Iterator[tuple[str, object]]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table, column in columns:
            if TOKEN_COLUMN.search(column) and not NOT_A_SECRET_COLUMN.search(column):
                query = f'SELECT "{column}" FROM "{schema}"."{table}"'  # noqa: S608
                for (value,) in conn.execute(query):
                    yield f"{dsn.rsplit('/', 1)[-1]}:{table}.{column}", value


@pytest.fixture
def exercised_stacks(tmp_path: Path, external_fakes: ExternalFakes) -> Iterator[list[Stack]]:
    """The stacks the session used; run alone, a fresh one exercised just enough to have logs and rows."""
    if STACKS:
        yield STACKS
        return
    stack = Stack(tmp_path / "stack", env=external_fakes.service_env(tmp_path)).start()
    try:
        user = f"secrets-{uuid.uuid4().hex[:8]}"
        build_world(stack, user, user_metadata(user))
        yield [stack]
    finally:
        stack.stop()


def test_no_secret_in_any_log_line_or_error_message(
    exercised_stacks: list[Stack], tmp_path_factory: pytest.TempPathFactory, external_fakes: ExternalFakes
) -> None:
    base = tmp_path_factory.getbasetemp()
    logs = sorted(base.rglob("*.log"))
    assert logs, f"no service logs under {base}: nothing was scanned"
    issued = set(external_fakes.platforms.issued)
    found = [
        f for log in logs for f in findings_in(log.read_text(errors="replace"), str(log.relative_to(base)), issued)
    ]
    for stack in exercised_stacks:
        for message in stack.observed_errors:
            found += list(findings_in(message, "error message", issued))
    assert not found, "secrets leaked:\n" + "\n".join(sorted(set(found))[:50])


def test_no_token_column_holds_a_clear_value(
    exercised_stacks: list[Stack],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    external_fakes: ExternalFakes,
) -> None:
    base = tmp_path_factory.getbasetemp()
    values: list[tuple[str, object]] = [v for db in sorted(base.rglob("*.db")) for v in sqlite_token_values(db)]
    postgres = request.getfixturevalue("postgres_databases") if STACKS else {}
    for url in postgres.values():
        values += list(postgres_token_values(url))
    issued = set(external_fakes.platforms.issued)
    assert issued, "no platform handed out a token: the scan would prove nothing"
    encrypted = [where for where, value in values if value and looks_encrypted(value, issued)]
    assert any("token" in where for where in encrypted), f"no token column found holding a token: {values[:5]}"
    clear = [f"{where} = {str(value)[:24]}…" for where, value in values if not looks_encrypted(value, issued)]
    assert not clear, "token columns holding clear values:\n" + "\n".join(clear[:50])
    # Nowhere else either: no issued token in any byte of any SQLite file (other columns, WAL, free pages).
    for db in sorted(base.rglob("*.db*")):
        raw = db.read_bytes()
        leaked = [token for token in issued if token.encode() in raw]
        assert not leaked, f"{db.relative_to(base)} holds platform tokens in clear: {[t[:16] for t in leaked]}"


def test_the_scan_recognises_what_it_looks_for() -> None:
    """The detectors themselves: a scan that finds nothing must be because nothing is there."""
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert list(findings_in(f'{{"msg": "calling", "authorization": "Bearer {jwt_like}"}}', "x"))
    assert list(findings_in('{"access_token": "ya29.a0AfH6SMBx"}', "x"))
    assert list(findings_in("POST /oauth2/token body=refresh_token=abcdef123456&grant_type=refresh_token", "x"))
    assert list(findings_in(f"token {SECRETS['REPLICATE_API_TOKEN']}", "x"))
    assert not list(findings_in('{"authorization": "[redacted]", "access_token": "[redacted]"}', "x"))
    assert not looks_encrypted("access-token-1234")
    assert not looks_encrypted(jwt_like)
    assert looks_encrypted(base64.urlsafe_b64encode(bytes(range(48))).decode())
    assert looks_encrypted("v1:k1:" + base64.b64encode(bytes(range(200, 248))).decode())
    assert not looks_encrypted(
        "v1:k1:" + base64.b64encode(bytes(range(48))).decode() + "twitter-at-1", {"twitter-at-1"}
    )
    assert list(findings_in("refreshing with twitter-rt-abc", "x", {"twitter-rt-abc"}))
