"""The scheduler's repository on SQLAlchemy (PostgreSQL and SQLite): jobs, job runs, notifications.

Batch-minded: claiming, recording and updating happen in a few statements per batch, not per job.
Every method is one short transaction; "now" always comes from the database clock. The parts live in
`sql_jobs`, `sql_runs`, `sql_dispatch` and `sql_notifications`; row mapping in `sql_rows`.
"""

from __future__ import annotations

from contentpipe.scheduler.adapters.sql_dispatch import SqlDispatch
from contentpipe.scheduler.adapters.sql_jobs import SqlJobs
from contentpipe.scheduler.adapters.sql_notifications import SqlNotifications


class SqlSchedulerStore(SqlJobs, SqlDispatch, SqlNotifications):
    """Implements service_layer.store.SchedulerStore."""
