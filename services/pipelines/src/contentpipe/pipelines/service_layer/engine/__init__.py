"""The durable run engine: claims runs with leases and executes their steps, recording every move.

Each run is one asyncio task (hundreds per replica, no thread each). Progress is saved after every
change that matters: before a child is created (the attempt number that its request id derives from)
and as soon as the child's name is known, so a run picked up by another worker after a crash adopts
the child instead of creating a second one. Saves are fenced by the lease: a worker that lost a run
cannot overwrite the new holder's progress.

Modules: `core` (settings, step outcomes, child request ids), `context` (what templates and media see), `waits`
(cancel-aware sleeps and long polls of children),
`targets` (the outcome of each target of a post step), `executor` (one run's steps), `worker` (the run queue's
handler on the common work-queue runtime: per-user limits, cancel watching, run outcomes).
"""
