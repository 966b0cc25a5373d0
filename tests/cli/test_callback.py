"""The loopback listener of `connections connect` receives the platform's redirect."""

from __future__ import annotations

import httpx
import pytest
from contentpipe.cli.callback import CallbackListener

pytestmark = pytest.mark.integration


async def test_redirect_with_code_and_state_completes_the_wait() -> None:
    listener = CallbackListener("127.0.0.1", 0, "/callback")
    await listener.start()
    try:
        async with httpx.AsyncClient() as client:
            stray = await client.get(f"http://127.0.0.1:{listener.port}/favicon.ico")
            response = await client.get(f"http://127.0.0.1:{listener.port}/callback?code=abc&state=s1")
        redirect = await listener.wait(2)
    finally:
        await listener.close()
    assert stray.status_code == 404
    assert response.status_code == 200 and "Connected" in response.text
    assert (redirect.code, redirect.state, redirect.error) == ("abc", "s1", "")


async def test_a_refused_authorization_is_reported() -> None:
    listener = CallbackListener("127.0.0.1", 0, "/callback")
    await listener.start()
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"http://127.0.0.1:{listener.port}/callback?error=access_denied&error_description=user+said+no&state=s1"
            )
        redirect = await listener.wait(2)
    finally:
        await listener.close()
    assert response.status_code == 400
    assert (redirect.error, redirect.error_description) == ("access_denied", "user said no")


async def test_no_redirect_times_out() -> None:
    listener = CallbackListener("127.0.0.1", 0, "/callback")
    await listener.start()
    try:
        with pytest.raises(TimeoutError):
            await listener.wait(0.2)
    finally:
        await listener.close()
