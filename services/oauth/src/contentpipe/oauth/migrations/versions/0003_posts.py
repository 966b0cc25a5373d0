"""Posting queue: posts (with worker leases and the in-flight mark) and shared rate-limit blocks.

Revision ID: 0003_posts
Revises: 0002_connections
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_posts"
down_revision: str | None = "0002_connections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "posts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("connection_id", sa.String(128), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("media", sa.JSON, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("publish_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("platform_post_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("permalink", sa.Text, nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reconcile_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.JSON, nullable=True),
        sa.Column("progress", sa.JSON, nullable=False),
        sa.Column("create_sent_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("owner", "request_id", name="uq_posts_owner_request_id"),
    )
    op.create_index("ix_posts_owner_create_time", "posts", ["owner", "create_time", "id"])
    op.create_index("ix_posts_due", "posts", ["state", "next_attempt_time"])
    op.create_index("ix_posts_account_published", "posts", ["platform", "account_id", "published_time"])
    op.create_table(
        "posting_rate_limits",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False, server_default=""),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("posting_rate_limits")
    op.drop_index("ix_posts_account_published", table_name="posts")
    op.drop_index("ix_posts_due", table_name="posts")
    op.drop_index("ix_posts_owner_create_time", table_name="posts")
    op.drop_table("posts")
