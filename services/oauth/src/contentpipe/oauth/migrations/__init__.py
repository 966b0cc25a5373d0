"""Alembic migrations of the oauth service (version table alembic_version_oauth)."""
