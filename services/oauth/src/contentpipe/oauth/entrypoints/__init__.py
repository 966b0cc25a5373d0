"""oauth entrypoints: the gRPC servicers (connections, posting) and the hosted OAuth callback page over HTTP."""
