"""Posts carry the W3C trace context of the call that created them (additive, nullable).

Revision ID: 0004_post_trace_context
Revises: 0003_posts
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_post_trace_context"
down_revision: str | None = "0003_posts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("posts", sa.Column("trace_context", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("posts", "trace_context")
