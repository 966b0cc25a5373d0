"""pipelines adapters: the SQLAlchemy repositories of pipelines and runs, and the gRPC stubs of the peer services
(generation, oauth, scheduler)."""
