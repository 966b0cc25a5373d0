"""Alembic environment of the generation service; the shared body lives in contentpipe.common.database."""

from contentpipe.common.database import run_env
from contentpipe.generation.adapters.repository import metadata

run_env(target_metadata=metadata)
