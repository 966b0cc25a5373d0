"""oauth use cases over the ports in `connections_ports` and `posting_ports`: `connections` (connect, refresh,
revoke; the `tokens.TokenProvider` it implements), `posting` (the posting API) and `posting_worker` (publishing
queued posts). Each repository method is its own short transaction; there is no unit-of-work object."""
