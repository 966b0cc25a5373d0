"""Alembic migrations of the generation service (version table alembic_version_generation)."""
