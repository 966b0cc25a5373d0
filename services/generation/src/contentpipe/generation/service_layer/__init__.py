"""generation use cases over the ports in `ports` (repository, providers, storage): `services` answers the API,
`worker` claims queued generations and `runner` drives one through its provider. Each repository method is its
own short transaction; there is no unit-of-work object."""
