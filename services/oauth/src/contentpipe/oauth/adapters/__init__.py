"""oauth adapters: SQLAlchemy repositories of connections and posts, token encryption, the platforms' OAuth
clients and publishers over HTTP, and the ffmpeg tools that make media conform."""
