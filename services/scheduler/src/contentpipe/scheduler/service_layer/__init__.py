"""scheduler use cases over `store.SchedulerStore` and the ports in `ports`: `jobs` (the jobs API), `processing`
(claiming due jobs and dispatching their runs) and `notifications`. Each store method is its own short
transaction; there is no unit-of-work object."""
