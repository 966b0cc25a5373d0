"""Following a pipeline run until it ends: a rich live table in a terminal, one plain line per change otherwise."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TextIO

from contentpipe.api.oauth.v1 import posting_service_pb2 as posting_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.cli.errors import EXIT_UNAVAILABLE, CliError
from contentpipe.cli.output import console, print_still_going, short_enum
from contentpipe.cli.session import Session
from google.protobuf.timestamp_pb2 import Timestamp
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

TERMINAL = {pb.PIPELINE_RUN_STATE_SUCCEEDED, pb.PIPELINE_RUN_STATE_FAILED, pb.PIPELINE_RUN_STATE_CANCELED}
# A service restart (a deploy, `contentpipe down && up`) must not end a watch: reconnect for this long, backing off.
RECONNECT_SECONDS = 60.0
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 5.0
_STEP_STYLE = {
    "SUCCEEDED": "green",
    "REUSED": "green",
    "FAILED": "red",
    "CANCELED": "yellow",
    "RUNNING": "cyan",
    "PENDING": "dim",
}


def run_state(run: pb.PipelineRun) -> str:
    return short_enum(pb.PipelineRunState.Name(run.state), "PIPELINE_RUN_STATE_")


def step_state(step: pb.StepRun) -> str:
    return short_enum(pb.StepRunState.Name(step.state), "STEP_RUN_STATE_")


def _seconds(start: Timestamp, end: Timestamp | None) -> float | None:
    if not start.seconds and not start.nanos:
        return None
    finish = end.ToDatetime(UTC) if end is not None and (end.seconds or end.nanos) else datetime.now(UTC)
    return max((finish - start.ToDatetime(UTC)).total_seconds(), 0.0)


def describe_step(step: pb.StepRun) -> str:
    """What a step produced (or why it failed), in one line."""
    if step.error.reason and step.state != pb.STEP_RUN_STATE_SUCCEEDED:
        retry = f" (retry at {_iso(step.next_attempt_time)})" if step.next_attempt_time.seconds else ""
        return f"{step.error.reason}: {step.error.message}{retry}"
    out = step.outputs
    parts: list[str] = []
    for asset in out.assets:
        size = f" {asset.width}x{asset.height}" if asset.width else ""
        length = f" {asset.duration_seconds:g}s" if asset.duration_seconds else ""
        parts.append(f"{asset.content_type}{size}{length} {asset.uri}")
    if out.text:
        text = out.text.replace("\n", " ")
        parts.append(f'"{text[:80]}{"..." if len(text) > 80 else ""}"')
    for target in step.targets:
        where = target.permalink or target.post or target.connection
        state = short_enum(posting_pb.PostState.Name(target.post_state), "POST_STATE_")
        parts.append(f"{target.connection} {state} {where}")
    if not step.targets:
        parts.extend(out.posts)
    if out.job:
        parts.append(f"{out.job} next run {_iso(out.next_run_time)}")
    if not parts and step.children:
        parts.extend(step.children)
    return "; ".join(parts)


def _iso(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_table(run: pb.PipelineRun) -> Table:
    table = Table(title=f"{run.name}  [bold]{run_state(run)}[/bold]", title_justify="left", box=None, pad_edge=False)
    table.add_column("")
    table.add_column("STEP", style="bold")
    table.add_column("STATE")
    table.add_column("TRY", justify="right")
    table.add_column("TIME", justify="right")
    # One row per step: a long path folded mid-word at 80 columns cannot be copied; the summary prints it whole.
    table.add_column("RESULT", overflow="ellipsis", no_wrap=True)
    for step in run.steps:
        state = step_state(step)
        icon: Spinner | Text
        if step.state == pb.STEP_RUN_STATE_RUNNING:
            icon = Spinner("dots", style="cyan")
        else:
            icon = Text({"SUCCEEDED": "✓", "REUSED": "✓", "FAILED": "✗", "CANCELED": "-"}.get(state, "·"))
        elapsed = _seconds(step.start_time, step.finish_time)
        table.add_row(
            icon,
            step.step_id,
            Text(state, style=_STEP_STYLE.get(state, "")),
            str(step.attempts or ""),
            f"{elapsed:.1f}s" if elapsed is not None else "",
            describe_step(step),
        )
    return table


def _signature(run: pb.PipelineRun) -> list[tuple[str, int, int, str]]:
    return [(step_state(s), s.attempts, len(s.children), s.error.reason) for s in run.steps]


async def watch_run(
    session: Session,
    name: str,
    *,
    interval: float = 0.5,
    live: bool | None = None,
    stream: TextIO | None = None,
    on_update: Callable[[pb.PipelineRun], None] | None = None,
    reconnect_seconds: float = RECONNECT_SECONDS,
) -> pb.PipelineRun:
    """Poll GetPipelineRun until the run is terminal, showing each change; returns the final run.

    Ctrl-C stops watching, not the run: the message says so and how to come back or cancel it.
    """
    out = stream or sys.stdout
    use_live = out.isatty() if live is None else live
    get = session.pipelines.GetPipelineRun

    async def fetch() -> pb.PipelineRun:
        response = await session.call("pipelines", get, pb.GetPipelineRunRequest(name=name))
        return response.run

    try:
        return await _follow(
            lambda: _reconnecting(fetch, reconnect_seconds),
            interval=interval,
            use_live=use_live,
            out=out,
            on_update=on_update,
        )
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the main task, then raises KeyboardInterrupt
        print_detached(name)
        raise


def print_detached(name: str, stream: TextIO | None = None) -> None:
    print_still_going(
        "the run", follow=f"contentpipe runs watch {name}", cancel=f"contentpipe runs cancel {name}", stream=stream
    )


async def _reconnecting(fetch: Callable[[], Awaitable[pb.PipelineRun]], budget: float) -> pb.PipelineRun:
    """`fetch()`, retrying while the service is unreachable (jittered backoff) for at most `budget` seconds."""
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    delay = RECONNECT_FIRST_DELAY
    attempt = 0
    while True:
        try:
            run = await fetch()
        except CliError as error:
            if error.exit_code != EXIT_UNAVAILABLE:
                raise
            now = loop.time()
            deadline = deadline if deadline is not None else now + budget
            if now >= deadline:
                error.message += f" (gave up reconnecting after {budget:.0f} s)"
                raise
            attempt += 1
            pause = min(random.uniform(delay / 2, delay), deadline - now)
            sys.stderr.write(
                f"pipelines unreachable; reconnecting (attempt {attempt}, giving up in {deadline - now:.0f} s)\n"
            )
            sys.stderr.flush()
            await asyncio.sleep(pause)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)
            continue
        if attempt:
            sys.stderr.write("reconnected\n")
            sys.stderr.flush()
        return run


async def _follow(
    fetch: Callable[[], Awaitable[pb.PipelineRun]],
    *,
    interval: float,
    use_live: bool,
    out: TextIO,
    on_update: Callable[[pb.PipelineRun], None] | None,
) -> pb.PipelineRun:
    run = await fetch()
    if use_live:
        with Live(render_table(run), console=console(out), refresh_per_second=8, transient=False) as view:
            while run.state not in TERMINAL:
                await asyncio.sleep(interval)
                run = await fetch()
                view.update(render_table(run))
        return run
    last_state = ""
    last_steps: list[tuple[str, int, int, str]] = []
    while True:
        state = run_state(run)
        # The run's own line comes first while it goes on, last once it ended: after the step that ended it.
        if state != last_state and run.state not in TERMINAL:
            _line(out, f"run {run.name} {state}")
        signature = _signature(run)
        for index, step in enumerate(run.steps):
            if index >= len(last_steps) or last_steps[index] != signature[index]:
                detail = describe_step(step)
                attempt = f" (attempt {step.attempts})" if step.attempts > 1 else ""
                _line(out, f"step {step.step_id} {step_state(step)}{attempt}{' ' + detail if detail else ''}")
        if state != last_state and run.state in TERMINAL:
            _line(out, f"run {run.name} {state}")
        last_state = state
        last_steps = signature
        if on_update is not None:
            on_update(run)
        if run.state in TERMINAL:
            return run
        await asyncio.sleep(interval)
        run = await fetch()


def _line(out: TextIO, text: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    out.write(f"{stamp} {text}\n")
    out.flush()


def print_summary(run: pb.PipelineRun, stream: TextIO | None = None) -> None:
    """Where the results are: files, posts, the next scheduled run; or why it failed."""
    out = stream or sys.stdout
    took = _took(run)
    out.write(f"\nrun {run.name} {run_state(run)}{took}\n")
    if run.trace_id:  # find every service's spans of this run in the tracing backend
        out.write(f"  trace id: {run.trace_id}\n")
    if run.state != pb.PIPELINE_RUN_STATE_SUCCEEDED and run.error.reason:
        out.write(f"  error: {run.error.reason}: {run.error.message}\n")
        if run.state == pb.PIPELINE_RUN_STATE_FAILED:
            out.write(f"  continue it after fixing the cause: contentpipe runs resume {run.name}\n")
    for step in run.steps:
        for asset in step.outputs.assets:
            size = f" {asset.width}x{asset.height}" if asset.width else ""
            length = f", {asset.duration_seconds:g}s" if asset.duration_seconds else ""
            out.write(f"  {step.step_id}: {asset.content_type}{size}{length} -> {_path(asset.uri)}\n")
        if step.outputs.text:
            out.write(f"  {step.step_id}: text: {step.outputs.text.strip()}\n")
        for target in step.targets:
            if target.error.reason and not target.permalink:
                out.write(f"  {step.step_id}: not posted via {target.connection}: {target.error.reason}\n")
                continue
            if not target.post:
                continue
            where = _path(target.permalink) if target.permalink else target.post
            out.write(f"  {step.step_id}: posted {target.post} via {target.connection} -> {where}\n")
        if step.outputs.job:
            out.write(f"  {step.step_id}: next scheduled run {_iso(step.outputs.next_run_time)} ({step.outputs.job})\n")
    out.flush()


def _took(run: pb.PipelineRun) -> str:
    """` in 3.2s` (from its start), ` after 1.5s` (it never started); nothing when the clock says nothing useful."""
    started = run.HasField("start_time") and (run.start_time.seconds or run.start_time.nanos)
    elapsed = _seconds(run.start_time if started else run.create_time, run.finish_time)
    if elapsed is None or elapsed < 0.05:  # failed on arrival: "FAILED in 0.0s" only looks like a broken clock
        return ""
    return f" in {elapsed:.1f}s" if started else f" after {elapsed:.1f}s"


def _path(uri: str) -> str:
    """Show `file://` URIs as paths people can open."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri
