"""SQLAlchemy tables of the scheduler (the migrations create the same schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL (timestamptz) and SQLite (naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use aware UTC datetimes")
        value = value.astimezone(UTC)
        # SQLite compares text: store every instant in one naive UTC format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is UTC:
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

jobs = Table(
    "scheduler_jobs",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("pipeline", String(200), nullable=False),
    Column("display_name", String(200), nullable=False, default=""),
    Column("cron_expression", String(200)),
    Column("time_zone", String(64), nullable=False, default="UTC"),
    Column("run_time", UTCDateTime()),
    Column("start_time", UTCDateTime()),
    Column("end_time", UTCDateTime()),
    Column("state", Integer, nullable=False),
    Column("state_reason", Text, nullable=False, default=""),
    Column("state_reason_code", String(40), nullable=False, default=""),
    Column("next_fire_time", UTCDateTime()),
    Column("last_fire_time", UTCDateTime()),
    Column("last_outcome", Integer, nullable=False, default=0),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("deactivations", Integer, nullable=False, default=0),
    Column("failure_notified", Boolean, nullable=False, default=False),
    Column("max_retries", Integer, nullable=False),
    Column("initial_backoff_s", Float, nullable=False),
    Column("backoff_multiplier", Float, nullable=False),
    Column("max_backoff_s", Float, nullable=False),
    Column("misfire_policy", Integer, nullable=False),
    Column("max_catch_up_runs", Integer, nullable=False),
    Column("catch_up_window_s", Float),
    Column("overlap_policy", Integer, nullable=False),
    Column("period_s", Float),
    Column("paused_at", UTCDateTime()),
    Column("missed_count", Integer, nullable=False, default=0),
    Column("skipped_count", Integer, nullable=False, default=0),
    Column("triggered_count", Integer, nullable=False, default=0),
    Column("last_lag_s", Float),
    Column("create_request_id", String(128)),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("update_time", UTCDateTime(), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("lease_owner", String(100)),
    Column("lease_expires_at", UTCDateTime()),
    UniqueConstraint("owner", "create_request_id", name="uq_scheduler_jobs_owner_request"),
    Index("ix_scheduler_jobs_due", "state", "next_fire_time"),
    Index("ix_scheduler_jobs_owner_created", "owner", "create_time", "id"),
    Index("ix_scheduler_jobs_pipeline", "pipeline"),
)

job_runs = Table(
    "scheduler_job_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("job_id", String(63), ForeignKey("scheduler_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("pipeline", String(200), nullable=False),
    Column("nominal_time", UTCDateTime(), nullable=False),
    Column("state", Integer, nullable=False),
    Column("manual", Boolean, nullable=False, default=False),
    Column("request_id", String(128)),
    Column("trigger_time", UTCDateTime()),
    Column("pipeline_run", String(200), nullable=False, default=""),
    Column("attempt", Integer, nullable=False, default=0),
    Column("next_retry_time", UTCDateTime()),
    Column("finish_time", UTCDateTime()),
    Column("message", Text, nullable=False, default=""),
    # When the processing loop next looks at an active run (dispatch, poll, retry).
    Column("next_check_at", UTCDateTime()),
    Column("lease_owner", String(100)),
    Column("lease_expires_at", UTCDateTime()),
    # The identity of a fire time: whoever inserts it first owns it (exactly once per nominal time).
    UniqueConstraint("job_id", "nominal_time", name="uq_scheduler_job_runs_job_nominal"),
    UniqueConstraint("job_id", "request_id", name="uq_scheduler_job_runs_job_request"),
    Index("ix_scheduler_job_runs_active", "state", "next_check_at"),
)

notifications = Table(
    "scheduler_notifications",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("kind", Integer, nullable=False),
    Column("title", String(300), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("job", String(100), nullable=False, default=""),
    Column("pipeline_run", String(200), nullable=False, default=""),
    Column("connection", String(200), nullable=False, default=""),
    # Makes "notify once" idempotent: e.g. deactivation:{job}:{epoch}.
    Column("dedupe_key", String(200), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("acknowledge_time", UTCDateTime()),
    # Webhook outbox.
    Column("deliver_time", UTCDateTime()),
    Column("delivery_attempts", Integer, nullable=False, default=0),
    Column("next_delivery_at", UTCDateTime()),
    Column("delivery_error", Text, nullable=False, default=""),
    Column("lease_owner", String(100)),
    Column("lease_expires_at", UTCDateTime()),
    UniqueConstraint("dedupe_key", name="uq_scheduler_notifications_dedupe"),
    Index("ix_scheduler_notifications_owner", "owner", "create_time", "id"),
    Index("ix_scheduler_notifications_outbox", "next_delivery_at"),
)
