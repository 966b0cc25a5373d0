"""pipelines use cases over the ports in `ports` (run repository, peers): `pipelines` (definitions), `runs` (the
runs API) and the `engine` package (executing runs). Each repository method is its own short transaction; there is
no unit-of-work object."""
