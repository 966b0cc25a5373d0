"""Scheduler schema: jobs, job runs (one per job and nominal time) and notifications (with webhook outbox).

Revision ID: scheduler_0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scheduler_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduler_jobs",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("cron_expression", sa.String(length=200), nullable=True),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("run_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=False),
        sa.Column("state_reason_code", sa.String(length=40), nullable=False),
        sa.Column("next_fire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("deactivations", sa.Integer(), nullable=False),
        sa.Column("failure_notified", sa.Boolean(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("initial_backoff_s", sa.Float(), nullable=False),
        sa.Column("backoff_multiplier", sa.Float(), nullable=False),
        sa.Column("max_backoff_s", sa.Float(), nullable=False),
        sa.Column("misfire_policy", sa.Integer(), nullable=False),
        sa.Column("max_catch_up_runs", sa.Integer(), nullable=False),
        sa.Column("catch_up_window_s", sa.Float(), nullable=True),
        sa.Column("overlap_policy", sa.Integer(), nullable=False),
        sa.Column("period_s", sa.Float(), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("missed_count", sa.Integer(), nullable=False),
        sa.Column("skipped_count", sa.Integer(), nullable=False),
        sa.Column("triggered_count", sa.Integer(), nullable=False),
        sa.Column("last_lag_s", sa.Float(), nullable=True),
        sa.Column("create_request_id", sa.String(length=128), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "create_request_id", name="uq_scheduler_jobs_owner_request"),
    )
    op.create_index("ix_scheduler_jobs_due", "scheduler_jobs", ["state", "next_fire_time"], unique=False)
    op.create_index("ix_scheduler_jobs_owner_created", "scheduler_jobs", ["owner", "create_time", "id"], unique=False)
    op.create_index("ix_scheduler_jobs_pipeline", "scheduler_jobs", ["pipeline"], unique=False)
    op.create_table(
        "scheduler_notifications",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("pipeline_run", sa.String(length=200), nullable=False),
        sa.Column("connection", sa.String(length=200), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledge_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deliver_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
        sa.Column("next_delivery_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_error", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key", name="uq_scheduler_notifications_dedupe"),
    )
    op.create_index("ix_scheduler_notifications_outbox", "scheduler_notifications", ["next_delivery_at"], unique=False)
    op.create_index(
        "ix_scheduler_notifications_owner", "scheduler_notifications", ["owner", "create_time", "id"], unique=False
    )
    op.create_table(
        "scheduler_job_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=63), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("nominal_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("trigger_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pipeline_run", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("next_retry_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["scheduler_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "nominal_time", name="uq_scheduler_job_runs_job_nominal"),
        sa.UniqueConstraint("job_id", "request_id", name="uq_scheduler_job_runs_job_request"),
    )
    op.create_index("ix_scheduler_job_runs_active", "scheduler_job_runs", ["state", "next_check_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_scheduler_job_runs_active", table_name="scheduler_job_runs")
    op.drop_table("scheduler_job_runs")
    op.drop_index("ix_scheduler_notifications_owner", table_name="scheduler_notifications")
    op.drop_index("ix_scheduler_notifications_outbox", table_name="scheduler_notifications")
    op.drop_table("scheduler_notifications")
    op.drop_index("ix_scheduler_jobs_pipeline", table_name="scheduler_jobs")
    op.drop_index("ix_scheduler_jobs_owner_created", table_name="scheduler_jobs")
    op.drop_index("ix_scheduler_jobs_due", table_name="scheduler_jobs")
    op.drop_table("scheduler_jobs")
