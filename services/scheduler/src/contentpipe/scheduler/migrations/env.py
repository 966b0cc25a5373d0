"""Alembic environment of the scheduler service; the shared body lives in contentpipe.common.database."""

from contentpipe.common.database import run_env
from contentpipe.scheduler.adapters.tables import metadata

run_env(target_metadata=metadata)
