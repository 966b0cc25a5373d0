"""generation adapters: the SQLAlchemy repository, the providers (local encoder, Replicate and Cog over HTTP) with the
models' input schemas, blob storage (local or S3) and the ffmpeg media tools."""
