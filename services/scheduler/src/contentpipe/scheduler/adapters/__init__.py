"""scheduler adapters: the SQLAlchemy store (jobs, runs, dispatch, notifications), the pipelines service's gRPC
stub and the webhook sender over HTTP."""
