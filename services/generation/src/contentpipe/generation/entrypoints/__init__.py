"""generation entrypoints: the gRPC servicer, and the HTTP listener for Replicate and Cog webhooks (with its spool)."""
