"""Kill a worker loop, not the process: what a replica must do when one of its background loops dies.

With CONTENTPIPE_FAULT_INJECTION on, SIGUSR1 crashes the first background loop of a service (its work-queue loop).
The process looks alive, but a replica whose worker is dead must not keep answering health checks as SERVING: the
supervisor turns health NOT_SERVING at once and exits with EXIT_BACKGROUND_FAILED after the shutdown grace, and the
orchestrator (here: the chaos loop) restarts it. A Health.Watch stream opened before the signal sees the change
(a plain Check would mostly find the server already stopping, which proves nothing).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from contentpipe.common.server import EXIT_BACKGROUND_FAILED
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import ServiceProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class LoopKill:
    """One SIGUSR1 to `proc` and what followed: NOT_SERVING on the watch, then the exit code."""

    name: str
    proc: ServiceProcess
    timeout: float  # from the signal to the exit: the shutdown grace plus slack for a loaded machine
    signalled_at: float = 0.0
    not_serving_after: float | None = None  # seconds from the signal
    exited_after: float | None = None
    exit_code: int | None = None
    _serving: threading.Event = field(default_factory=threading.Event)
    _signalled: threading.Event = field(default_factory=threading.Event)
    _channel: grpc.Channel | None = None
    _stream: Any = None  # the Watch call: an iterator of responses that can be cancelled

    def start(self) -> bool:
        """Watch health, and once it says SERVING send SIGUSR1; False (nothing sent) when it is not serving."""
        process = self.proc.process
        if process is None or process.poll() is not None:
            return False
        self._channel = self.proc.channel()
        stub = health_pb2_grpc.HealthStub(self._channel)
        self._stream = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout + 10)
        threading.Thread(target=self._watch, name=f"chaos-watch-{self.name}", daemon=True).start()
        if not self._serving.wait(timeout=3):
            self._close()
            return False
        self.signalled_at = time.monotonic()
        self._signalled.set()
        process.send_signal(signal.SIGUSR1)
        return True

    def _watch(self) -> None:
        assert self._stream is not None
        try:
            for response in self._stream:
                if response.status == SERVING:
                    self._serving.set()
                elif response.status == NOT_SERVING and self._signalled.is_set():
                    self.not_serving_after = time.monotonic() - self.signalled_at
                    return
        except grpc.RpcError:
            pass  # the server went away (or the stream was cancelled): whatever was seen is recorded

    def poll(self) -> bool:
        """True once the process has exited or the timeout passed (then it is killed, and that is a failure)."""
        process = self.proc.process
        assert process is not None
        code = process.poll()
        if code is None and time.monotonic() - self.signalled_at < self.timeout:
            return False
        if code is None:
            process.kill()
            process.wait()
        else:
            self.exit_code = code
            self.exited_after = time.monotonic() - self.signalled_at
        self._close()
        return True

    def problems(self) -> list[str]:
        """What went wrong, for the verdict (empty: NOT_SERVING was reported, then the process exited with 70)."""
        found = []
        if self.not_serving_after is None:
            found.append(f"{self.name}: health never reported NOT_SERVING after its worker loop was killed")
        if self.exit_code is None:
            found.append(f"{self.name}: still running {self.timeout:.0f} s after its worker loop was killed")
        elif self.exit_code != EXIT_BACKGROUND_FAILED:
            found.append(f"{self.name}: exited with {self.exit_code} (want {EXIT_BACKGROUND_FAILED}) after a loop kill")
        return found

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        if self._channel is not None:
            self._channel.close()
