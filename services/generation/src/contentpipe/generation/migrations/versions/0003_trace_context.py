"""Generations carry the W3C trace context of the call that created them (additive, nullable).

Revision ID: generation_0003
Revises: generation_0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "generation_0003"
down_revision: str | None = "generation_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("trace_context", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("generations", "trace_context")
