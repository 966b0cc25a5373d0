"""contentpipe.common: the runtime every contentpipe service shares (no business rules)."""
