"""Tokens for tests: one long HS256 secret and Bearer metadata helpers."""

from __future__ import annotations

from contentpipe.common.auth import mint_token

TEST_JWT_SECRET = "test-secret-that-is-at-least-32-bytes-long!!"


def bearer(user_id: str = "user-1", role: str = "authenticated", **kwargs: object) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a fresh valid token for `user_id`."""
    token = mint_token(TEST_JWT_SECRET, user_id, role, **kwargs)  # type: ignore[arg-type]
    return (("authorization", f"Bearer {token}"),)


__all__ = ["TEST_JWT_SECRET", "bearer", "mint_token"]
