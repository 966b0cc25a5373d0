"""A one-shot loopback HTTP listener that receives the OAuth redirect (`?code=...&state=...`) for `connect`."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from html import escape
from urllib.parse import parse_qs, urlsplit

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>contentpipe</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{body}</p></body></html>"
)


@dataclass(frozen=True, slots=True)
class Redirect:
    """What the platform sent back: `code` and `state`, or an `error` (with its description)."""

    code: str
    state: str
    error: str = ""
    error_description: str = ""


class CallbackListener:
    """Listens on 127.0.0.1:`port` for one request to `path`; other paths get 404 and are ignored."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._host = host
        self._port = port
        self._path = path or "/"
        self._result: asyncio.Future[Redirect] | None = None
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._result = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def wait(self, seconds: float) -> Redirect:
        assert self._result is not None
        return await asyncio.wait_for(asyncio.shield(self._result), seconds)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request_line.split()
            target = urlsplit(parts[1]) if len(parts) >= 2 else urlsplit("/")
            if len(parts) < 2 or parts[0] != "GET" or target.path != self._path:
                await self._respond(writer, 404, "Not found", "This is the contentpipe sign-in listener.")
                return
            query = {key: values[0] for key, values in parse_qs(target.query).items()}
            redirect = Redirect(
                code=query.get("code", ""),
                state=query.get("state", ""),
                error=query.get("error", ""),
                error_description=query.get("error_description", ""),
            )
            if redirect.error:
                await self._respond(
                    writer, 400, "Authorization failed", f"{redirect.error}: {redirect.error_description}"
                )
            elif not redirect.code or not redirect.state:
                await self._respond(writer, 400, "Missing code or state", "Start again from the command line.")
                return
            else:
                await self._respond(writer, 200, "Connected", "You can close this tab and return to the terminal.")
            if self._result is not None and not self._result.done():
                self._result.set_result(redirect)
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()
                await writer.wait_closed()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, title: str, body: str) -> None:
        page = _PAGE.format(title=escape(title), body=escape(body)).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + page)
        await writer.drain()
