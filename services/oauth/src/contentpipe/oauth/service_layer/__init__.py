"""oauth use cases: one function per use case, over a unit of work and ports."""
