"""Alembic migrations of the pipelines service (version table alembic_version_pipelines)."""
