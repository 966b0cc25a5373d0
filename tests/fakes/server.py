"""Run any ASGI app (e.g. a Starlette fake of an external API) on 127.0.0.1:<free port> in a thread.

    app = Starlette(routes=[Route("/v1/predictions", create, methods=["POST"])])
    with LoopbackHTTPServer(app) as fake:
        client = create_http_client(base_url=fake.url)

Works from sync and async tests alike (the server has its own event loop in its own thread).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from tests.support.ports import free_port


class LoopbackHTTPServer:
    def __init__(self, app: Any, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        # uvicorn installs signal handlers only on the main thread; none here.
        self._thread = threading.Thread(target=self._server.run, name=f"fake-http-{self.port}", daemon=True)

    def start(self, timeout: float = 10.0) -> LoopbackHTTPServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake HTTP server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
