"""Webhook deliveries of provider predictions, kept until a worker reads them (Cog results arrive only by webhook).

Revision ID: generation_0005
Revises: generation_0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "generation_0005"
down_revision: str | None = "generation_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_deliveries",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("prediction_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provider_deliveries")
