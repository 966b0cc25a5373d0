"""The `contentpipe` command-line client: thin commands over the generated gRPC stubs, no business rules."""
