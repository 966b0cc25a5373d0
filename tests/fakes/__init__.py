"""Loopback fakes of external HTTP APIs (Replicate, social platforms) for integration tests."""

from tests.fakes.server import LoopbackHTTPServer

__all__ = ["LoopbackHTTPServer"]
