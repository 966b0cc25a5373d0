"""Which generation holds each provider prediction (an adopted prediction is never shared).

Revision ID: generation_0004
Revises: generation_0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "generation_0004"
down_revision: str | None = "generation_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_predictions",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("prediction_id", sa.String(128), primary_key=True),
        sa.Column("generation_id", sa.String(32), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_provider_predictions_generation_id", "provider_predictions", ["generation_id"])


def downgrade() -> None:
    op.drop_index("ix_provider_predictions_generation_id", table_name="provider_predictions")
    op.drop_table("provider_predictions")
