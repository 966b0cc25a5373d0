"""One publisher per platform (X, LinkedIn, Instagram, TikTok, Facebook Pages, YouTube) plus the local outbox."""
