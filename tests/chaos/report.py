"""What a chaos run did to the services, and the summary table it prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.faults import FaultInjector
from tests.chaos.invariants import Verdict
from tests.chaos.loop_kills import LoopKill


@dataclass
class Events:
    kills: Counter[str] = field(default_factory=Counter)
    loop_kills: list[LoopKill] = field(default_factory=list)  # finished ones: SIGUSR1 → NOT_SERVING → exit
    crash_restarts: Counter[str] = field(default_factory=Counter)
    pg_restarts: int = 0
    driver_retries: int = 0


def summary(verdict: Verdict, events: Events, faults: list[FaultInjector], elapsed: float) -> str:
    c = verdict.counts
    loop_kills = events.loop_kills
    slowest_exit = max((k.exited_after or 0.0 for k in loop_kills), default=0.0)
    rows = [
        ("due fire times", c["fires"]),
        ("job runs", c["job_runs"]),
        ("pipeline runs", c["runs"]),
        ("  succeeded / failed", f"{c['runs_succeeded']} / {c['runs_failed']}"),
        ("step retries", c["retries"]),
        ("generations / predictions", f"{c['generations']} / {c['predictions']}"),
        ("posts / published / unconfirmed", f"{c['posts']} / {c['posts_published']} / {c['posts_unconfirmed']}"),
        ("delivered at platforms", c["delivered"]),
        ("  of them UNCONFIRMED (for review)", c["unconfirmed_but_delivered"]),
        ("run targets UNCONFIRMED, since reconciled", c["stale_run_targets"]),
        ("SIGKILLs", f"{sum(events.kills.values())} {dict(events.kills)}"),
        ("worker-loop kills (SIGUSR1)", f"{len(loop_kills)} {dict(Counter(k.name for k in loop_kills))}"),
        ("  NOT_SERVING, then exit 70", f"{sum(not k.problems() for k in loop_kills)} of {len(loop_kills)}"),
        ("  slowest signal → exit", f"{slowest_exit:.1f} s"),
        ("unplanned exits (restarted)", f"{sum(events.crash_restarts.values())} {dict(events.crash_restarts)}"),
        ("PostgreSQL restarts", events.pg_restarts),
        ("injected faults", ", ".join(f"{f.name}: {dict(f.counts)}" for f in faults)),
        ("driver retries (UNAVAILABLE)", events.driver_retries),
        ("duplicates", c["duplicates"]),
        ("lost", c["lost"]),
        ("stuck", c["stuck"]),
        ("double generations", c["double_generations"]),
        ("unlisted UNCONFIRMED posts", c["unlisted_unconfirmed"]),
        ("unreconciled records", c["unreconciled"]),
        ("wall time", f"{elapsed:.0f} s"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = ["", "=" * (width + 40), *(f"{label:<{width}}  {value}" for label, value in rows), "=" * (width + 40)]
    return "\n".join(lines)
