"""The shared runtime end to end in a real process: auth, error details, graceful SIGTERM with a call in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import jwt
import pytest
from contentpipe.common import errors
from contentpipe.common.grpc_errors import error_from_rpc

from tests.support import TEST_JWT_SECRET, ServiceProcess, bearer, mint_token

pytestmark = pytest.mark.integration


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess("scheduler", tmp_path, module="tests.support.test_server")
    proc.start()
    yield proc
    proc.terminate()


async def _call(
    address: str, method: str, payload: bytes = b"", metadata: tuple[tuple[str, str], ...] = (), timeout: float = 10
) -> bytes:
    async with grpc.aio.insecure_channel(address) as channel:
        result: bytes = await channel.unary_unary(f"/test.Probe/{method}", None, None)(
            payload, metadata=metadata, timeout=timeout
        )
        return result


async def _code(address: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(address, "Whoami", metadata=metadata)
    return info.value.code()


async def test_missing_expired_forged_and_alg_none_tokens_are_unauthenticated(probe: ServiceProcess) -> None:
    expired = mint_token(TEST_JWT_SECRET, "u1", ttl_seconds=-60)
    forged = mint_token("another-secret-that-is-also-32-bytes-long", "u1")
    alg_none = jwt.encode({"sub": "u1", "role": "service", "exp": int(time.time()) + 60}, None, algorithm="none")  # type: ignore[arg-type]
    cases = {
        "missing": (),
        "not bearer": (("authorization", "Basic dTpw"),),
        "malformed": (("authorization", "Bearer not.a.jwt"),),
        "expired": (("authorization", f"Bearer {expired}"),),
        "forged": (("authorization", f"Bearer {forged}"),),
        "alg none": (("authorization", f"Bearer {alg_none}"),),
    }
    for name, metadata in cases.items():
        assert await _code(probe.address, metadata) == grpc.StatusCode.UNAUTHENTICATED, name
    assert expired not in probe.logs()


async def test_valid_token_sets_the_principal(probe: ServiceProcess) -> None:
    assert await _call(probe.address, "Whoami", metadata=bearer("user-7")) == b"user-7|authenticated|False"


async def test_service_token_may_act_for_a_user_and_others_may_not(probe: ServiceProcess) -> None:
    acting = (*bearer("service:pipelines", role="service"), ("x-contentpipe-user", "user-9"))
    assert await _call(probe.address, "Whoami", metadata=acting) == b"user-9|service|True"
    impersonating = (*bearer("user-1"), ("x-contentpipe-user", "user-9"))
    assert await _code(probe.address, impersonating) == grpc.StatusCode.PERMISSION_DENIED


async def test_handler_errors_arrive_with_decodable_details(probe: ServiceProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(probe.address, "Missing", b"invalid", metadata=bearer())
    err = error_from_rpc(info.value)
    assert isinstance(err, errors.InvalidArgument)
    assert err.violations == (errors.FieldViolation("pipeline.name", "must not be empty"),)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(probe.address, "Missing", b"", metadata=bearer())
    not_found = error_from_rpc(info.value)
    assert isinstance(not_found, errors.NotFound)
    assert not_found.reason == "PIPELINE_NOT_FOUND"
    assert not_found.metadata == {"name": "pipelines/x"}


async def test_unhandled_exception_is_internal_without_internals_and_logged(probe: ServiceProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(probe.address, "Boom", metadata=bearer())
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (info.value.details() or "")
    assert "request id" in (info.value.details() or "")
    await asyncio.sleep(0.2)
    assert "RuntimeError" in probe.logs()


async def test_sigterm_lets_the_in_flight_call_finish_and_exits_zero(probe: ServiceProcess) -> None:
    call = asyncio.create_task(_call(probe.address, "Slow", b"1.5", metadata=bearer()))
    await asyncio.sleep(0.5)
    assert probe.process is not None
    started = time.monotonic()
    probe.process.send_signal(15)
    assert await call == b"done"
    code = await asyncio.to_thread(probe.process.wait, 10)
    assert code == 0
    assert time.monotonic() - started < 5  # well inside CONTENTPIPE_SHUTDOWN_GRACE_SECONDS=5
