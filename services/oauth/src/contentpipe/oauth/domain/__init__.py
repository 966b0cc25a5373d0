"""oauth domain model and rules: plain Python, no I/O."""
