"""`make chaos`: the four services on PostgreSQL under SIGKILLs, killed worker loops, flaky providers and a
database restart; then the invariants (tests/chaos/invariants.py) over everything the services and the fakes recorded.

Configuration (environment): DURATION (120s; `30m` for the long run), USERS (50), PIPELINES_PER_USER (2),
JOB_INTERVAL (30s between one-off jobs of a pipeline), KILL_INTERVAL (5s), LOOP_KILL_INTERVAL (25s between
SIGUSR1s that kill one worker loop of a service, the first within a third of the run; 0 = none), SETTLE_TIMEOUT
(180s), SEED, PG_RESTART (1 = restart PostgreSQL once mid-run), KEEP_WORKDIR.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from contentpipe.api.generation.v1 import generation_service_pb2 as gen
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as posting
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pipe
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched
from contentpipe.common.settings import ConfigError, env_duration, env_int
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from tests.chaos.faults import FaultInjector
from tests.chaos.invariants import (
    Fire,
    GenerationView,
    JobRunView,
    Observed,
    PostView,
    RunView,
    TargetView,
    check,
)
from tests.chaos.loop_kills import LoopKill
from tests.chaos.platforms import Platform, chaos_platforms
from tests.chaos.report import Events, summary
from tests.fakes import LoopbackHTTPServer
from tests.fakes.replicate import FakeReplicate
from tests.security.stack import Stack, user_metadata
from tests.security.tenants import invoke
from tests.support.postgres import create_database, drop_database, postgres_available

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
SERVICES = ("generation", "oauth", "pipelines", "scheduler")
REPLICATE_TOKEN = "r8_chaos_token_0123456789abcdef"
# One intended post per fire time and platform: a second copy at a platform is a duplicate, whichever run
# (a step retry inside one run, or a job retry's new run) sent it.
CAPTION = "chaos post for {{ run.job }} due {{ run.nominal_time }}"


@dataclass(frozen=True)
class ChaosConfig:
    duration: float
    users: int
    pipelines_per_user: int
    job_interval: float
    kill_interval: float
    loop_kill_interval: float
    settle_timeout: float
    seed: int
    pg_restart: bool
    keep_workdir: bool
    platforms: list[str]

    @staticmethod
    def from_env(environ: dict[str, str]) -> ChaosConfig:
        return ChaosConfig(
            duration=env_duration(environ, "DURATION", 120.0),
            users=env_int(environ, "USERS", 50, minimum=1, maximum=10_000),
            pipelines_per_user=env_int(environ, "PIPELINES_PER_USER", 2, minimum=1, maximum=100),
            job_interval=env_duration(environ, "JOB_INTERVAL", 30.0),
            kill_interval=env_duration(environ, "KILL_INTERVAL", 5.0),
            loop_kill_interval=env_duration(environ, "LOOP_KILL_INTERVAL", 25.0),
            settle_timeout=env_duration(environ, "SETTLE_TIMEOUT", 180.0),
            seed=env_int(environ, "SEED", int(time.time()) % 100_000),
            pg_restart=environ.get("PG_RESTART", "1") not in ("0", "false", "no"),
            keep_workdir=environ.get("KEEP_WORKDIR", "0") not in ("0", "false", "no", ""),
            platforms=[p.strip() for p in environ.get("PLATFORMS", "outbox,twitter").split(",") if p.strip()],
        )


class ChaosAborted(Exception):
    """The system did not recover enough to check invariants (itself a failure of `make chaos`)."""


def log(message: str) -> None:
    print(f"[chaos {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def from_ts(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


class Driver:
    """Calls the services as the chaos users, retrying transient failures with the same (idempotent) request."""

    def __init__(self, stack: Stack, events: Events) -> None:
        self.stack = stack
        self.events = events

    def call(self, method: str, request: Message, user: str, *, attempts: int = 40) -> Any:
        delay = 0.2
        for attempt in range(attempts):
            try:
                return invoke(self.stack, method, request, user_metadata(user), timeout=10)
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE or attempt == attempts - 1:
                    raise ChaosAborted(f"{method} as {user}: {err.code().name} {err.details()!r}") from None
                self.events.driver_retries += 1
                time.sleep(delay)
                delay = min(delay * 1.5, 2.0)
        raise AssertionError("unreachable")

    def pages(self, method: str, make: Callable[[str], Message], field_name: str, user: str) -> Iterator[Any]:
        token = ""
        while True:
            response = self.call(method, make(token), user)
            yield from getattr(response, field_name)
            token = response.next_page_token
            if not token:
                return


# ---------------------------------------------------------------------------------------------------- set-up


def create_world(driver: Driver, config: ChaosConfig, platforms: list[Platform], start: datetime) -> list[Fire]:
    """USERS x PIPELINES_PER_USER pipelines (generate text → post to every platform) and their one-off jobs."""
    fires: list[Fire] = []
    rng = random.Random(config.seed)
    fires_per_pipeline = max(1, int((config.duration - 10) // config.job_interval) + 1)
    for u in range(config.users):
        user = f"chaos-user-{u:03d}"
        connections = [platform.connect(driver, user) for platform in platforms]
        for p in range(config.pipelines_per_user):
            pipeline = driver.call(
                "CreatePipeline",
                pipe.CreatePipelineRequest(
                    pipeline=pipe.Pipeline(
                        display_name=f"chaos {u}-{p}",
                        steps=[
                            pipe.Step(
                                id="gen",
                                generate_content=pipe.GenerateContentStep(
                                    kind=gen.GENERATION_KIND_TEXT, prompt="chaos {{ run.name }}"
                                ),
                            ),
                            *(
                                [
                                    pipe.Step(
                                        id="post",
                                        post_to_platform=pipe.PostToPlatformStep(
                                            connections=connections, caption=CAPTION
                                        ),
                                    )
                                ]
                                if connections
                                else []
                            ),
                        ],
                    ),
                    request_id=f"chaos-{config.seed}-{user}-p{p}",
                ),
                user,
            ).pipeline.name
            offset = rng.uniform(0, config.job_interval)
            for k in range(fires_per_pipeline):
                due = (start + timedelta(seconds=offset + k * config.job_interval)).replace(microsecond=0)
                if due > start + timedelta(seconds=config.duration - 5):
                    break
                job = driver.call(
                    "CreateJob",
                    sched.CreateJobRequest(
                        job=sched.Job(
                            pipeline=pipeline,
                            display_name=f"chaos {u}-{p}-{k}",
                            run_time=ts(due),
                            misfire_policy=sched.MISFIRE_POLICY_ALL,
                            catch_up_window=duration_pb2.Duration(seconds=3600),
                            overlap_policy=sched.OVERLAP_POLICY_ALLOW,
                        ),
                        request_id=f"chaos-{config.seed}-{user}-p{p}-k{k}",
                    ),
                    user,
                ).job.name
                fires.append(Fire(user, job, pipeline, due))
    return fires


# ---------------------------------------------------------------------------------------------------- chaos


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120)


def unleash(stack: Stack, config: ChaosConfig, faults: list[FaultInjector], events: Events, until: float) -> None:
    rng = random.Random(config.seed + 1)
    for fault in faults:
        fault.enabled = True
    next_kill = time.monotonic() + rng.uniform(config.kill_interval / 2, config.kill_interval * 1.5)
    pg_restart_at = time.monotonic() + (until - time.monotonic()) / 2 if config.pg_restart else float("inf")
    loop_interval = config.loop_kill_interval
    next_loop_kill = (
        time.monotonic() + min(rng.uniform(loop_interval / 2, loop_interval * 1.5), config.duration / 3)
        if loop_interval > 0
        else float("inf")
    )
    down: dict[str, float] = {}
    dying: dict[str, LoopKill] = {}  # a killed worker loop: the service must go NOT_SERVING and exit by itself
    while time.monotonic() < until:
        now = time.monotonic()
        finish_loop_kills(stack, dying, events)
        for name, proc in stack.procs.items():
            if name in dying:
                continue
            if name not in down and proc.process is not None and proc.process.poll() is not None:
                events.crash_restarts[name] += 1
                log(f"{name} exited by itself (code {proc.process.returncode}); restarting")
                proc.start(wait=False)
        for name, when in list(down.items()):
            if now >= when:
                stack.procs[name].start(wait=False)
                del down[name]
        if now >= next_kill:
            victim = rng.choice([s for s in SERVICES if s not in down and s not in dying])
            proc = stack.procs[victim]
            if proc.process is not None and proc.process.poll() is None:
                proc.process.send_signal(signal.SIGKILL)
                proc.process.wait()
                events.kills[victim] += 1
                down[victim] = now + rng.uniform(0.2, 2.0)
            next_kill = now + rng.uniform(config.kill_interval / 2, config.kill_interval * 1.5)
        if now >= next_loop_kill:
            victim = rng.choice([s for s in SERVICES if s not in down and s not in dying])
            kill = LoopKill(victim, stack.procs[victim], timeout=30.0)
            if kill.start():
                dying[victim] = kill
                next_loop_kill = now + rng.uniform(loop_interval / 2, loop_interval * 1.5)
            else:
                next_loop_kill = now + 1.0  # not SERVING yet (just restarted): another service soon
        if now >= pg_restart_at:
            log("restarting PostgreSQL")
            restart_postgres()
            events.pg_restarts += 1
            pg_restart_at = float("inf")
        time.sleep(0.1)
    while dying:
        finish_loop_kills(stack, dying, events)
        time.sleep(0.1)
    for name in down:
        stack.procs[name].start(wait=False)
    for fault in faults:
        fault.enabled = False
    for proc in stack.procs.values():
        if proc.process is not None and proc.process.poll() is not None:
            proc.start(wait=False)
    for name, proc in stack.procs.items():
        try:
            proc.wait_serving(timeout=90)
        except (TimeoutError, RuntimeError) as exc:
            raise ChaosAborted(f"{name} did not come back after the chaos: {str(exc).splitlines()[0]}") from None


def finish_loop_kills(stack: Stack, dying: dict[str, LoopKill], events: Events) -> None:
    """Restart each service whose worker loop was killed once it has exited (as Kubernetes would)."""
    for name, kill in list(dying.items()):
        if kill.poll():
            del dying[name]
            events.loop_kills.append(kill)
            log(
                f"{name}: worker loop killed; NOT_SERVING after {kill.not_serving_after or -1:.2f} s, "
                f"exit {kill.exit_code} after {kill.exited_after or -1:.1f} s; restarting"
            )
            stack.procs[name].start(wait=False)


# ---------------------------------------------------------------------------------------------------- observe


def observe(driver: Driver, fires: list[Fire], platforms: list[Platform], replicate: FakeReplicate) -> Observed:
    observed = Observed(fires=list(fires))
    users = sorted({f.user for f in fires})
    for job in sorted({f.job for f in fires}):
        user = next(f.user for f in fires if f.job == job)

        def job_runs(token: str, job: str = job) -> Message:
            return sched.ListJobRunsRequest(parent=job, page_size=1000, page_token=token)

        for jr in driver.pages("ListJobRuns", job_runs, "job_runs", user):
            observed.job_runs.append(
                JobRunView(
                    job,
                    from_ts(jr.nominal_time),
                    sched.JobRunState.Name(jr.state).removeprefix("JOB_RUN_STATE_"),
                    jr.pipeline_run,
                    attempt=jr.attempt,
                )
            )
    for user in users:
        for run in driver.pages(
            "ListPipelineRuns",
            lambda t: pipe.ListPipelineRunsRequest(parent="pipelines/-", page_size=1000, page_token=t),
            "runs",
            user,
        ):
            children = [c for step in run.steps for c in step.children]
            generations = {c for c in children if c.startswith("generations/")}
            generations |= {s.outputs.generation for s in run.steps if s.outputs.generation}
            posts = {c for c in children if c.startswith("posts/")} | {p for s in run.steps for p in s.outputs.posts}
            targets = tuple(
                TargetView(t.connection, t.post, posting.PostState.Name(t.post_state).removeprefix("POST_STATE_"))
                for s in run.steps
                for t in s.targets
            )
            observed.runs.append(
                RunView(
                    user=user,
                    name=run.name,
                    state=pipe.PipelineRunState.Name(run.state).removeprefix("PIPELINE_RUN_STATE_"),
                    trigger_job=run.trigger.job,
                    nominal_time=from_ts(run.trigger.nominal_time),
                    generations=tuple(sorted(generations)),
                    targets=targets,
                    retries=sum(max(0, s.attempts - 1) for s in run.steps),
                    posts=tuple(sorted(posts)),
                    create_time=from_ts(run.create_time),
                )
            )
        if platforms:
            observe_posts(driver, observed, user)
        for generation in driver.pages(
            "ListGenerations", lambda t: gen.ListGenerationsRequest(page_size=1000, page_token=t), "generations", user
        ):
            observed.generations.append(GenerationView(user, generation.name, generation.request_id, generation.prompt))
    for platform in platforms:
        observed.delivered.extend(platform.delivered())
    with replicate.lock:
        observed.prediction_prompts = [str(p.input.get("prompt", "")) for p in replicate.predictions.values()]
    return observed


def observe_posts(driver: Driver, observed: Observed, user: str) -> None:
    for post in driver.pages(
        "ListPosts", lambda t: posting.ListPostsRequest(page_size=1000, page_token=t), "posts", user
    ):
        observed.posts.append(
            PostView(
                user,
                post.name,
                posting.PostState.Name(post.state).removeprefix("POST_STATE_"),
                platform_pb2.Platform.Name(post.platform).removeprefix("PLATFORM_").lower(),
                post.platform_post_id,
                post.text,
            )
        )
    unconfirmed = posting.POST_STATE_UNCONFIRMED
    for post in driver.pages(
        "ListPosts",
        lambda t: posting.ListPostsRequest(page_size=1000, page_token=t, state=unconfirmed),
        "posts",
        user,
    ):
        observed.unconfirmed_listed.add(post.name)


def settled(observed: Observed, now: datetime) -> bool:
    due = [f for f in observed.fires if f.nominal_time <= now]
    runs_for = Counter(r.trigger_job for r in observed.runs)
    all_fired = all(runs_for.get(f.job, 0) >= 1 for f in due)
    runs_done = all(r.state in ("SUCCEEDED", "FAILED", "CANCELED") for r in observed.runs)
    jobs_done = all(jr.state not in ("TRIGGERED", "RETRY_SCHEDULED", "BUFFERED") for jr in observed.job_runs)
    return all_fired and runs_done and jobs_done


def run(config: ChaosConfig) -> int:
    reason = postgres_available()
    if reason is not None:
        log(f"PostgreSQL is required: {reason}")
        return 2
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="contentpipe-chaos-"))
    log(f"seed {config.seed}, workdir {workdir}, duration {config.duration:.0f}s, {config.users} users")
    databases = {service: create_database() for service in SERVICES}
    events = Events()
    replicate = FakeReplicate(token=REPLICATE_TOKEN, polls_to_finish=1)
    replicate_faults = FaultInjector(replicate.app, "replicate", rng=random.Random(config.seed + 2))
    platforms = chaos_platforms(workdir, seed=config.seed, names=config.platforms)
    faults = [replicate_faults, *(p.faults for p in platforms if p.faults is not None)]
    stack: Stack | None = None
    failed = True
    try:
        with LoopbackHTTPServer(replicate_faults) as replicate_server:
            replicate.base_url = replicate_server.url
            for platform in platforms:
                platform.start()
            # uvicorn configures its loggers when a server starts: silence the injected client give-ups after that.
            logging.getLogger("uvicorn.error").disabled = True
            env = {
                "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1",  # every fake listens on loopback
                "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS": "2",
                "CONTENTPIPE_FAULT_INJECTION": "1",  # SIGUSR1 kills a worker loop (LOOP_KILL_INTERVAL)
                "LOG_LEVEL": "INFO",
                "GENERATION_DEFAULT_PROVIDER": "replicate",
                "REPLICATE_BASE_URL": replicate_server.url,
                "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
                "REPLICATE_PREFER_WAIT_SECONDS": "1",
                "REPLICATE_POLL_INITIAL": "200ms",
                "REPLICATE_POLL_MAX": "1s",
                "REPLICATE_CREATE_LOOKUP_DELAY": "500ms",
                "GENERATION_WORKER_POLL_INTERVAL": "300ms",
                "GENERATION_WORKER_LEASE": "6s",
                "PIPELINES_LEASE_SECONDS": "6",
                "PIPELINES_CLAIM_INTERVAL_SECONDS": "0.3",
                "PIPELINES_POLL_INITIAL_SECONDS": "0.3",
                "PIPELINES_POLL_MAX_SECONDS": "2",
                "SCHEDULER_PROCESS_INTERVAL": "1s",
                "SCHEDULER_POLL_INTERVAL": "2s",
            }
            for platform in platforms:
                env.update(platform.service_env())
            stack = Stack(workdir, database_urls={s: url for s, (_, url) in databases.items()}, env=env).start()
            driver = Driver(stack, events)
            # The first jobs fall due once set-up (about 0.4 s per user) is over.
            start = datetime.now(UTC) + timedelta(seconds=max(10.0, 0.5 * config.users))
            log("creating users, connections, pipelines and jobs")
            fires = create_world(driver, config, platforms, start)
            log(f"{len(fires)} one-off jobs due between {start:%H:%M:%S} and +{config.duration:.0f}s; chaos begins")
            unleash(stack, config, faults, events, until=time.monotonic() + config.duration + 10)
            log("chaos over; settling")
            deadline = time.monotonic() + config.settle_timeout
            observed = observe(driver, fires, platforms, replicate)
            while not settled(observed, datetime.now(UTC)) and time.monotonic() < deadline:
                time.sleep(5)
                observed = observe(driver, fires, platforms, replicate)
            verdict = check(observed)
            print(summary(verdict, events, faults, time.monotonic() - started))
            violations = [*verdict.violations, *(p for kill in events.loop_kills for p in kill.problems())]
            if config.loop_kill_interval > 0 and not events.loop_kills:
                violations.append("no worker loop was killed (no service was SERVING when one was due?)")
            if violations:
                print(f"\n{len(violations)} invariant violations (first 40):")
                for violation in violations[:40]:
                    print(f"  - {violation}")
                print(f"\nservice logs: {workdir}")
                return 1
            print("\nall invariants hold")
            failed = False
            return 0
    finally:
        if stack is not None:
            stack.stop()
        for platform in platforms:
            platform.stop()
        keep_databases = config.keep_workdir
        for name, _ in databases.values():
            if keep_databases:
                continue
            try:
                drop_database(name)
            except Exception as exc:  # cleanup must not hide the verdict
                log(f"could not drop {name}: {exc}")
        if failed or config.keep_workdir:
            kept = f" and databases {sorted(n for n, _ in databases.values())}" if keep_databases else ""
            log(f"kept {workdir} (service logs, outbox){kept}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    try:
        config = ChaosConfig.from_env(dict(os.environ))
    except ConfigError as exc:
        print(f"make chaos: {exc}", file=sys.stderr)
        return 2
    try:
        return run(config)
    except ChaosAborted as exc:
        print(f"make chaos: FAILED — {exc}", file=sys.stderr)
        return 1
