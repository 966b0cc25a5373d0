"""Helpers shared by every test suite: ports, tokens, service processes, PostgreSQL databases."""

from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.tokens import TEST_JWT_SECRET, bearer, mint_token

__all__ = ["TEST_JWT_SECRET", "ServiceProcess", "bearer", "free_port", "mint_token"]
