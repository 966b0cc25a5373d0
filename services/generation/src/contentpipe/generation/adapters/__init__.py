"""generation adapters: SQLAlchemy repositories, HTTP clients and stubs of other services."""
