"""`make bench`: one harness, one table (see docs/performance.md)."""
