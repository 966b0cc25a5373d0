"""contentpipe.scheduler: the scheduler service (fires jobs on schedules and keeps notifications)."""
