"""generation entrypoints: gRPC servicers that translate messages and call the service layer."""
