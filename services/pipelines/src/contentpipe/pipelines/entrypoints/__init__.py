"""pipelines entrypoints: the gRPC servicer that translates messages and calls the service layer."""
