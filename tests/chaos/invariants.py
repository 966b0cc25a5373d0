"""The chaos run's invariants, as pure functions over what was observed (unit-tested in test_invariants.py).

Nothing lost, nothing done twice: every due fire time has exactly one job run and one pipeline run; every run is
terminal (or its UNCONFIRMED posts are listed for review); each intended post reached a platform at most once and
each PUBLISHED post exactly once; no generation was created twice for one step attempt; counts reconcile.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

TERMINAL_RUN_STATES = {"SUCCEEDED", "FAILED", "CANCELED"}
TERMINAL_JOB_RUN_STATES = {"SUCCEEDED", "FAILED", "SKIPPED", "COALESCED", "CANCELED"}


@dataclass(frozen=True)
class Fire:
    """A one-off job the runner created, due at `nominal_time`."""

    user: str
    job: str
    pipeline: str
    nominal_time: datetime


@dataclass(frozen=True)
class JobRunView:
    job: str
    nominal_time: datetime | None
    state: str
    pipeline_run: str
    attempt: int = 1


@dataclass(frozen=True)
class TargetView:
    connection: str
    post: str
    post_state: str


@dataclass(frozen=True)
class RunView:
    user: str
    name: str
    state: str
    trigger_job: str
    nominal_time: datetime | None
    generations: tuple[str, ...]
    targets: tuple[TargetView, ...]
    retries: int
    posts: tuple[str, ...] = ()
    create_time: datetime | None = None


@dataclass(frozen=True)
class PostView:
    user: str
    name: str
    state: str
    platform: str
    platform_post_id: str
    text: str


@dataclass(frozen=True)
class GenerationView:
    user: str
    name: str
    request_id: str
    prompt: str


@dataclass(frozen=True)
class DeliveredPost:
    """A post as the platform (fake) holds it."""

    platform: str
    platform_post_id: str
    text: str


@dataclass
class Observed:
    fires: list[Fire] = field(default_factory=list)
    job_runs: list[JobRunView] = field(default_factory=list)
    runs: list[RunView] = field(default_factory=list)
    posts: list[PostView] = field(default_factory=list)
    unconfirmed_listed: set[str] = field(default_factory=set)
    generations: list[GenerationView] = field(default_factory=list)
    delivered: list[DeliveredPost] = field(default_factory=list)
    prediction_prompts: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.violations.append(f"{kind}: {detail}")


def check(observed: Observed) -> Verdict:
    verdict = Verdict()
    counts = verdict.counts
    for kind in ("lost", "duplicates", "stuck", "unlisted_unconfirmed", "double_generations", "unreconciled"):
        counts[kind] = 0

    # 1. Every due fire time: exactly one job run record, and one pipeline run per attempt (a job retry policy
    #    may run the pipeline again for the same fire time, but only after the previous attempt failed).
    job_runs_by_fire: dict[tuple[str, datetime | None], list[JobRunView]] = {}
    for jr in observed.job_runs:
        job_runs_by_fire.setdefault((jr.job, jr.nominal_time), []).append(jr)
    runs_by_fire: dict[tuple[str, datetime | None], list[RunView]] = {}
    for run in observed.runs:
        if run.trigger_job:
            runs_by_fire.setdefault((run.trigger_job, run.nominal_time), []).append(run)
    for fire in observed.fires:
        key = (fire.job, fire.nominal_time)
        job_runs = job_runs_by_fire.get(key, [])
        runs = sorted(runs_by_fire.get(key, []), key=lambda r: (r.create_time is None, r.create_time, r.name))
        detail = f"{fire.job} due {fire.nominal_time:%H:%M:%S}: {len(job_runs)} job runs, runs " + ", ".join(
            f"{r.name.rsplit('/', 1)[-1]}={r.state}" for r in runs
        )
        if not job_runs or not runs:
            verdict.add("lost", detail)
        attempts = max([jr.attempt for jr in job_runs] + [1])
        overlapping = [r for r in runs[:-1] if r.state not in ("FAILED", "CANCELED")]
        succeeded = [r for r in runs if r.state == "SUCCEEDED"]
        if len(job_runs) > 1 or len(runs) > attempts or overlapping or len(succeeded) > 1:
            verdict.add("duplicates", detail)
    missed = [jr for jr in observed.job_runs if jr.state == "MISSED"]
    for jr in missed:
        verdict.add("lost", f"{jr.job} fire {jr.nominal_time} recorded MISSED")

    # 2. Every run terminal, or its UNCONFIRMED posts listed for review.
    # A post the run saw UNCONFIRMED may since have been reconciled (PUBLISHED or FAILED) by oauth: its current
    # state counts; one still UNCONFIRMED must be in the review list.
    post_state = {p.name: p.state for p in observed.posts}
    counts["stale_run_targets"] = 0
    for run in observed.runs:
        if run.state not in TERMINAL_RUN_STATES:
            verdict.add("stuck", f"{run.name} still {run.state}")
        for target in run.targets:
            if target.post_state != "UNCONFIRMED":
                continue
            current = post_state.get(target.post, "UNCONFIRMED")
            if current != "UNCONFIRMED":
                counts["stale_run_targets"] += 1
            elif target.post not in observed.unconfirmed_listed:
                verdict.add("unlisted_unconfirmed", f"{target.post} of {run.name}")
    for post in observed.posts:
        if post.state == "UNCONFIRMED" and post.name not in observed.unconfirmed_listed:
            verdict.add("unlisted_unconfirmed", f"{post.name} is UNCONFIRMED but not in ListPosts(state=UNCONFIRMED)")
    for job_run in observed.job_runs:
        if job_run.state not in TERMINAL_JOB_RUN_STATES | {"MISSED"}:
            verdict.add("stuck", f"job run of {job_run.job} at {job_run.nominal_time} still {job_run.state}")

    # 3. Each intended post at most once at its platform; every PUBLISHED post exactly once.
    delivered_by_id = Counter((d.platform, d.platform_post_id) for d in observed.delivered)
    delivered_by_text = Counter((d.platform, d.text) for d in observed.delivered)
    for (platform, text), n in delivered_by_text.items():
        if n > 1:
            verdict.add("duplicates", f"{n} copies at {platform} of {text!r}")
    for post in observed.posts:
        if post.state == "PUBLISHED":
            n = delivered_by_id.get((post.platform, post.platform_post_id), 0)
            if n != 1:
                kind = "lost" if n == 0 else "duplicates"
                verdict.add(kind, f"PUBLISHED {post.name} is at {post.platform} {n} times")

    # 4. No generation created twice for one step attempt (request ids are per run, step, attempt).
    per_request = Counter((g.user, g.request_id) for g in observed.generations if g.request_id)
    for (user, request_id), n in per_request.items():
        if n > 1:
            verdict.add("double_generations", f"{user} {request_id}: {n} generations")
    generations_per_prompt = Counter(g.prompt for g in observed.generations)
    for prompt, n in Counter(observed.prediction_prompts).items():
        expected = generations_per_prompt.get(prompt, 0)
        if n > expected:
            verdict.add(
                "double_generations",
                f"{n} predictions for {expected} generations: {prompt[:60]!r}",
            )

    # 5. Counts reconcile between services.
    referenced_generations = {g for run in observed.runs for g in run.generations if g}
    owned_generations = {g.name for g in observed.generations}
    for name in sorted(referenced_generations - owned_generations):
        verdict.add("unreconciled", f"run references {name}, which the generation service does not list")
    for name in sorted(owned_generations - referenced_generations):
        verdict.add("unreconciled", f"generation {name} is referenced by no run (created twice?)")
    referenced_posts = {t.post for run in observed.runs for t in run.targets if t.post}
    referenced_posts |= {p for run in observed.runs for p in run.posts}
    listed_posts = {p.name for p in observed.posts}
    for name in sorted(referenced_posts - listed_posts):
        verdict.add("unreconciled", f"run references {name}, which the oauth service does not list")
    for name in sorted(listed_posts - referenced_posts):
        verdict.add("unreconciled", f"post {name} is referenced by no run (created twice?)")
    pipeline_runs_named = {jr.pipeline_run for jr in observed.job_runs if jr.pipeline_run}
    run_names = {r.name for r in observed.runs}
    for name in sorted(pipeline_runs_named - run_names):
        verdict.add("unreconciled", f"a job run names {name}, which the pipelines service does not list")

    counts["fires"] = len(observed.fires)
    counts["job_runs"] = len(observed.job_runs)
    counts["runs"] = len(observed.runs)
    counts["runs_succeeded"] = sum(r.state == "SUCCEEDED" for r in observed.runs)
    counts["runs_failed"] = sum(r.state == "FAILED" for r in observed.runs)
    counts["retries"] = sum(r.retries for r in observed.runs)
    counts["posts"] = len(observed.posts)
    counts["posts_published"] = sum(p.state == "PUBLISHED" for p in observed.posts)
    counts["posts_unconfirmed"] = sum(p.state == "UNCONFIRMED" for p in observed.posts)
    counts["delivered"] = len(observed.delivered)
    delivered_ids = {(d.platform, d.platform_post_id) for d in observed.delivered}
    delivered_texts = {(d.platform, d.text) for d in observed.delivered}
    counts["unconfirmed_but_delivered"] = sum(
        p.state == "UNCONFIRMED"
        and ((p.platform, p.platform_post_id) in delivered_ids or (p.platform, p.text) in delivered_texts)
        for p in observed.posts
    )
    counts["generations"] = len(observed.generations)
    counts["predictions"] = len(observed.prediction_prompts)
    return verdict
