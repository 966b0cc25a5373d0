"""scheduler entrypoints: the gRPC servicers (jobs, notifications) and their message conversions."""
