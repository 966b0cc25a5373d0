"""Pipelines and their runs (with leases for the run engine).

Revision ID: pipelines_0002
Revises: pipelines_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pipelines_0002"
down_revision: str | None = "pipelines_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "request_id", name="uq_pipelines_owner_request_id"),
    )
    op.create_index("ix_pipelines_owner_create", "pipelines", ["owner", "create_time", "id"])
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("pipeline_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pipeline_revision", sa.Integer, nullable=False),
        sa.Column("pipeline_display_name", sa.String(200), nullable=False),
        sa.Column("trigger", sa.JSON, nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("trace_context", sa.JSON, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("owner", "request_id", name="uq_pipeline_runs_owner_request_id"),
    )
    op.create_index("ix_pipeline_runs_owner_create", "pipeline_runs", ["owner", "create_time", "id"])
    op.create_index("ix_pipeline_runs_pipeline_create", "pipeline_runs", ["pipeline_id", "create_time", "id"])
    op.create_index("ix_pipeline_runs_state_lease", "pipeline_runs", ["state", "lease_expires_at"])


def downgrade() -> None:
    op.drop_table("pipeline_runs")
    op.drop_table("pipelines")
