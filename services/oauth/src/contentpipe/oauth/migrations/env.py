"""Alembic environment of the oauth service; the shared body lives in contentpipe.common.database."""

from contentpipe.common.database import run_env

# Service engineers: pass the service's SQLAlchemy MetaData here to enable autogenerate.
run_env(target_metadata=None)
