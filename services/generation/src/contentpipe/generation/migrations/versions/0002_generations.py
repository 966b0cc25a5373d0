"""Generations table: one row per generation, with the worker's lease columns.

Revision ID: generation_0002
Revises: generation_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "generation_0002"
down_revision: str | None = "generation_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("predictions", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("owner", "request_id", name="uq_generations_owner_request_id"),
    )
    op.create_index("ix_generations_owner_create_time", "generations", ["owner", "create_time", "id"])
    op.create_index("ix_generations_state_create_time", "generations", ["state", "create_time"])


def downgrade() -> None:
    op.drop_index("ix_generations_state_create_time", table_name="generations")
    op.drop_index("ix_generations_owner_create_time", table_name="generations")
    op.drop_table("generations")
