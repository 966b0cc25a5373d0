"""The platform fakes of the posting tests, shared."""

from tests.oauth.posting.conftest import fakes

__all__ = ["fakes"]
