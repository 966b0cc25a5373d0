"""contentpipe.oauth: the oauth service (holds platform connections and publishes posts)."""
