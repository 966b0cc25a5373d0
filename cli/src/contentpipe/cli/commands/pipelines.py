"""`contentpipe pipelines ...` and `contentpipe runs ...`: definitions, runs, live progress."""

from __future__ import annotations

import argparse
import asyncio
import sys

from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.cli.errors import EXIT_FAILED, EXIT_OK
from contentpipe.cli.manifests import parse_message, read_document
from contentpipe.cli.output import age_col, col, print_list, print_resource
from contentpipe.cli.parsing import SubParsers, add_command, add_group, add_paging
from contentpipe.cli.platforms import resolve_connection_references
from contentpipe.cli.references import pipeline_name, run_name
from contentpipe.cli.session import Session
from contentpipe.cli.watch import print_summary, watch_run
from contentpipe.common.ids import new_id
from google.protobuf import field_mask_pb2

PIPELINE_COLUMNS = [
    col("NAME", "name"),
    col("DISPLAY NAME", "display_name"),
    col("STATE", "state", enum_prefix="PIPELINE_STATE_"),
    col("REV", "revision"),
    age_col("UPDATED", "update_time"),
]
PIPELINE_HELP = "pipelines/ID, ID or a unique prefix of ID"
RUN_HELP = "pipelines/P/runs/R, or a run id or a unique prefix of it"
RUN_COLUMNS = [
    col("RUN", "name"),
    col("STATE", "state", enum_prefix="PIPELINE_RUN_STATE_"),
    col("TRIGGER", "trigger.kind", enum_prefix="RUN_TRIGGER_KIND_"),
    age_col("AGE", "create_time"),
    age_col("FINISHED", "finish_time"),
    col("ERROR", "error.reason"),
]


def register(sub: SubParsers) -> None:
    group = add_group(
        sub,
        "pipelines",
        help="create, list, run, pause and resume pipelines",
        examples=[
            "contentpipe pipelines create -f examples/local-demo.yaml",
            "contentpipe pipelines run pipelines/0193... --wait",
        ],
    )
    create = add_command(
        group,
        "create",
        help="create a pipeline from a YAML or JSON file mirroring the Pipeline message",
        handler=create_pipeline,
        reads=True,
        description=(
            "Create a pipeline from a file with the fields of contentpipe.api.pipelines.v1.Pipeline (proto field\n"
            "names or their JSON camelCase). Enum values may drop their prefix (kind: VIDEO). A connection may be\n"
            "written @PLATFORM (e.g. @outbox) when you have exactly one on that platform. The file is checked\n"
            "before it is sent; errors name the field path, and the server's own violations are shown too."
        ),
        examples=[
            "contentpipe pipelines create -f examples/local-demo.yaml",
            "contentpipe pipelines create -f pipeline.json --validate-only",
            "cat pipeline.yaml | contentpipe pipelines create -f - -o json",
        ],
    )
    create.add_argument("-f", "--file", required=True, help="YAML or JSON file, `-` for stdin")
    create.add_argument("--validate-only", action="store_true", help="have the server check it; create nothing")
    create.add_argument("--request-id", default="", help="idempotency key (default: a new one)")

    update = add_command(
        group,
        "update",
        help="replace a pipeline's definition from a file (fields in --fields, default all)",
        handler=update_pipeline,
        reads=True,
        examples=[
            "contentpipe pipelines update pipelines/0193... -f examples/local-demo.yaml",
            "contentpipe pipelines update pipelines/0193... -f p.yaml --fields display_name,steps",
        ],
    )
    update.add_argument("pipeline", help=PIPELINE_HELP)
    update.add_argument("-f", "--file", required=True, help="YAML or JSON file, `-` for stdin")
    update.add_argument("--fields", default="", help="comma-separated update mask (default: all)")
    update.add_argument("--etag", default="", help="fail with exit 5 if the pipeline changed since this etag")

    listing = add_command(
        group,
        "list",
        help="list your pipelines",
        handler=list_pipelines,
        reads=True,
        examples=["contentpipe pipelines list", "contentpipe pipelines list --state paused -o yaml"],
    )
    listing.add_argument("--state", choices=("active", "paused"), help="only pipelines in this state")
    add_paging(listing)

    get = add_command(
        group,
        "get",
        help="show one pipeline",
        handler=get_pipeline,
        reads=True,
        examples=["contentpipe pipelines get pipelines/0193...", "contentpipe pipelines get 0193... -o yaml > p.yaml"],
    )
    get.add_argument("pipeline", help=PIPELINE_HELP)

    delete = add_command(
        group,
        "delete",
        help="delete a pipeline and its run history",
        handler=delete_pipeline,
        examples=["contentpipe pipelines delete pipelines/0193..."],
    )
    delete.add_argument("pipeline", help=PIPELINE_HELP)
    delete.add_argument("--etag", default="", help="fail with exit 5 if the pipeline changed since this etag")

    run = add_command(
        group,
        "run",
        help="run a pipeline now (with --wait: follow it until it ends)",
        handler=run_pipeline,
        reads=True,
        description=(
            "Queue a run of the pipeline's current revision. With --wait, show the steps live until the run\n"
            "ends, then print where the results are; the exit code is 0 if the run SUCCEEDED, 1 otherwise."
        ),
        examples=[
            "contentpipe pipelines run pipelines/0193...",
            "contentpipe pipelines run pipelines/0193... --wait",
        ],
    )
    run.add_argument("pipeline", help=PIPELINE_HELP)
    run.add_argument("--wait", action="store_true", help="follow the run until it ends")
    run.add_argument("--request-id", default="", help="idempotency key (default: a new one)")
    run.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds with --wait")

    runs = add_command(
        group,
        "runs",
        help="list the runs of a pipeline (or of all pipelines)",
        handler=list_runs,
        reads=True,
        examples=["contentpipe pipelines runs pipelines/0193...", "contentpipe pipelines runs --state failed"],
        deprecated_for="contentpipe runs list --pipeline PIPELINE",
    )
    runs.add_argument(
        "pipeline", nargs="?", default="-", help="pipelines/ID, ID or a unique prefix of ID (default: all)"
    )
    runs.add_argument("--state", choices=("queued", "running", "succeeded", "failed", "canceled"))
    add_paging(runs)

    cancel = add_command(
        group,
        "cancel",
        help="cancel a run",
        handler=cancel_run,
        reads=True,
        examples=["contentpipe pipelines cancel pipelines/0193.../runs/0194..."],
        deprecated_for="contentpipe runs cancel RUN",
    )
    cancel.add_argument("run", help=RUN_HELP)

    pause = add_command(
        group,
        "pause",
        help="pause a pipeline (runs are refused; its jobs pause)",
        handler=pause_pipeline,
        reads=True,
        examples=["contentpipe pipelines pause pipelines/0193..."],
    )
    pause.add_argument("pipeline", help=PIPELINE_HELP)

    resume_parser = add_command(
        group,
        "resume",
        help="resume a paused pipeline",
        handler=resume_pipeline,
        reads=True,
        description=(
            "Set a paused pipeline ACTIVE again. To continue a FAILED or CANCELED run from its first unfinished\n"
            "step, use `contentpipe runs resume RUN`."
        ),
        examples=["contentpipe pipelines resume pipelines/0193..."],
    )
    resume_parser.add_argument("name", help="pipelines/ID, ID or a unique prefix of ID")
    resume_parser.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)  # the old run form

    _register_runs(sub)


def _register_runs(sub: SubParsers) -> None:
    group = add_group(
        sub,
        "runs",
        help="follow, list, cancel and resume pipeline runs",
        examples=["contentpipe runs watch pipelines/P/runs/R", "contentpipe runs list --state failed"],
    )
    watch = add_command(
        group,
        "watch",
        help="follow a run live until it ends",
        handler=watch_command,
        description=(
            "Show a run's steps as they progress: a live table in a terminal, one line per change when the\n"
            "output is not a terminal (logs, CI). Exit code 0 if the run SUCCEEDED, 1 if it FAILED or was CANCELED."
        ),
        examples=[
            "contentpipe runs watch pipelines/P/runs/R",
            "contentpipe runs watch pipelines/P/runs/R | tee run.log",
        ],
    )
    watch.add_argument("run", help=RUN_HELP)
    watch.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds")
    watch.add_argument("--plain", action="store_true", help="plain lines even in a terminal")

    get = add_command(
        group,
        "get",
        help="show one run with its steps",
        handler=get_run,
        reads=True,
        examples=["contentpipe runs get pipelines/P/runs/R -o yaml"],
    )
    get.add_argument("run", help=RUN_HELP)

    listing = add_command(
        group,
        "list",
        help="list runs, newest first",
        handler=list_runs,
        reads=True,
        examples=["contentpipe runs list", "contentpipe runs list --pipeline pipelines/0193... --state failed"],
    )
    listing.add_argument("--pipeline", dest="pipeline", default="-", help="only this pipeline")
    listing.add_argument("--state", choices=("queued", "running", "succeeded", "failed", "canceled"))
    add_paging(listing)

    cancel = add_command(
        group,
        "cancel",
        help="cancel a run that has not ended",
        handler=cancel_run,
        reads=True,
        examples=["contentpipe runs cancel pipelines/P/runs/R"],
    )
    cancel.add_argument("run", help=RUN_HELP)

    resume_parser = add_command(
        group,
        "resume",
        help="continue a FAILED or CANCELED run from its first unfinished step",
        handler=resume_run,
        reads=True,
        examples=["contentpipe runs resume pipelines/P/runs/R --wait", "contentpipe runs resume 01a2c3 --wait"],
    )
    resume_parser.add_argument("name", help=RUN_HELP)
    resume_parser.add_argument("--wait", action="store_true", help="follow the new run until it ends")
    revision = resume_parser.add_mutually_exclusive_group()
    revision.add_argument(
        "--latest",
        dest="revision",
        action="store_const",
        const="latest",
        help="run the pipeline's current revision (after fixing it); steps that succeeded and did not change are "
        "reused. Asked for when the pipeline changed since the run and a terminal is attached",
    )
    revision.add_argument(
        "--same-revision",
        dest="revision",
        action="store_const",
        const="same",
        help="run the failed run's own revision even if the pipeline changed since (the default without a terminal)",
    )


async def load_pipeline(session: Session, path: str) -> pb.Pipeline:
    document = read_document(path)
    if isinstance(document, dict):
        await resolve_connection_references(session, document)
    return parse_message(document, pb.Pipeline, source=path)


async def create_pipeline(session: Session, args: argparse.Namespace) -> int:
    pipeline = await load_pipeline(session, args.file)
    request = pb.CreatePipelineRequest(
        pipeline=pipeline, request_id=args.request_id or new_id(), validate_only=args.validate_only
    )
    response = await session.call("pipelines", session.pipelines.CreatePipeline, request)
    if args.output == "table":
        verb = "valid" if args.validate_only else "created"
        print(f"{verb} {response.pipeline.name or '(validate only)'} ({response.pipeline.display_name})")
        if not args.validate_only:
            print(f"run it: contentpipe pipelines run {response.pipeline.name} --wait", file=sys.stderr)
        return EXIT_OK
    print_resource(response.pipeline, args.output)
    return EXIT_OK


async def update_pipeline(session: Session, args: argparse.Namespace) -> int:
    pipeline = await load_pipeline(session, args.file)
    pipeline.name = await pipeline_name(session, args.pipeline)
    pipeline.etag = args.etag
    mask = field_mask_pb2.FieldMask(paths=[f.strip() for f in args.fields.split(",") if f.strip()])
    response = await session.call(
        "pipelines", session.pipelines.UpdatePipeline, pb.UpdatePipelineRequest(pipeline=pipeline, update_mask=mask)
    )
    print_resource(response.pipeline, args.output)
    return EXIT_OK


async def list_pipelines(session: Session, args: argparse.Namespace) -> int:
    state = {"active": pb.PIPELINE_STATE_ACTIVE, "paused": pb.PIPELINE_STATE_PAUSED}.get(args.state or "", 0)
    request = pb.ListPipelinesRequest(page_size=args.page_size, page_token=args.page_token, state=state)  # type: ignore[arg-type]
    response = await session.call("pipelines", session.pipelines.ListPipelines, request)
    print_list(response, "pipelines", PIPELINE_COLUMNS, args.output)
    return EXIT_OK


async def get_pipeline(session: Session, args: argparse.Namespace) -> int:
    response = await session.call(
        "pipelines",
        session.pipelines.GetPipeline,
        pb.GetPipelineRequest(name=await pipeline_name(session, args.pipeline)),
    )
    print_resource(response.pipeline, args.output)
    return EXIT_OK


async def delete_pipeline(session: Session, args: argparse.Namespace) -> int:
    name = await pipeline_name(session, args.pipeline)
    await session.call(
        "pipelines", session.pipelines.DeletePipeline, pb.DeletePipelineRequest(name=name, etag=args.etag)
    )
    print(f"deleted {name}")
    return EXIT_OK


async def run_pipeline(session: Session, args: argparse.Namespace) -> int:
    name = await pipeline_name(session, args.pipeline)
    request = pb.RunPipelineRequest(name=name, request_id=args.request_id or new_id())
    response = await session.call("pipelines", session.pipelines.RunPipeline, request)
    return await _after_run(session, response.run, args)


async def _after_run(session: Session, run: pb.PipelineRun, args: argparse.Namespace) -> int:
    if not getattr(args, "wait", False):
        if args.output == "table":
            print(run.name)
            print(f"follow it: contentpipe runs watch {run.name}", file=sys.stderr)
        else:
            print_resource(run, args.output)
        return EXIT_OK
    live = None if args.output == "table" else False
    final = await watch_run(
        session,
        run.name,
        interval=getattr(args, "interval", 0.5),
        live=live,
        stream=sys.stdout if args.output == "table" else sys.stderr,
    )
    if args.output == "table":
        print_summary(final)
    else:
        print_resource(final, args.output)
    return EXIT_OK if final.state == pb.PIPELINE_RUN_STATE_SUCCEEDED else EXIT_FAILED


async def list_runs(session: Session, args: argparse.Namespace) -> int:
    parent = "pipelines/-" if args.pipeline == "-" else await pipeline_name(session, args.pipeline)
    state = pb.PipelineRunState.Value(f"PIPELINE_RUN_STATE_{args.state.upper()}") if args.state else 0
    request = pb.ListPipelineRunsRequest(
        parent=parent,
        page_size=args.page_size,
        page_token=args.page_token,
        state=state,  # type: ignore[arg-type]
    )
    response = await session.call("pipelines", session.pipelines.ListPipelineRuns, request)
    print_list(response, "runs", RUN_COLUMNS, args.output)
    return EXIT_OK


async def get_run(session: Session, args: argparse.Namespace) -> int:
    response = await session.call(
        "pipelines", session.pipelines.GetPipelineRun, pb.GetPipelineRunRequest(name=await run_name(session, args.run))
    )
    if args.output == "table":
        print_summary(response.run)
        return EXIT_OK
    print_resource(response.run, args.output)
    return EXIT_OK


async def watch_command(session: Session, args: argparse.Namespace) -> int:
    final = await watch_run(
        session, await run_name(session, args.run), interval=args.interval, live=False if args.plain else None
    )
    print_summary(final)
    return EXIT_OK if final.state == pb.PIPELINE_RUN_STATE_SUCCEEDED else EXIT_FAILED


async def cancel_run(session: Session, args: argparse.Namespace) -> int:
    response = await session.call(
        "pipelines",
        session.pipelines.CancelPipelineRun,
        pb.CancelPipelineRunRequest(name=await run_name(session, args.run)),
    )
    if args.output == "table":
        print(f"{response.run.name} {pb.PipelineRunState.Name(response.run.state).removeprefix('PIPELINE_RUN_STATE_')}")
        return EXIT_OK
    print_resource(response.run, args.output)
    return EXIT_OK


async def _set_state(session: Session, name: str, state: int) -> pb.Pipeline:
    request = pb.UpdatePipelineRequest(
        pipeline=pb.Pipeline(name=name, state=state),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=["state"]),
    )
    response = await session.call("pipelines", session.pipelines.UpdatePipeline, request)
    return response.pipeline


async def pause_pipeline(session: Session, args: argparse.Namespace) -> int:
    pipeline = await _set_state(session, await pipeline_name(session, args.pipeline), pb.PIPELINE_STATE_PAUSED)
    _print_pipeline_state(pipeline, args.output)
    return EXIT_OK


async def resume_run(session: Session, args: argparse.Namespace) -> int:
    name = await run_name(session, args.name)
    use_latest = await _resume_with_latest(session, name, getattr(args, "revision", None))
    request = pb.ResumePipelineRunRequest(name=name, request_id=new_id(), use_latest_revision=use_latest)
    response = await session.call("pipelines", session.pipelines.ResumePipelineRun, request)
    whose = "the pipeline's latest" if use_latest else "the failed run's"
    print(f"resuming with revision {response.run.pipeline_revision} ({whose})", file=sys.stderr)
    return await _after_run(session, response.run, args)


async def _resume_with_latest(session: Session, run: str, choice: str | None) -> bool:
    """Whether to resume with the pipeline's current revision: the flag, else ask when it changed since the run."""
    if choice is not None:
        return choice == "latest"
    failed = (await session.call("pipelines", session.pipelines.GetPipelineRun, pb.GetPipelineRunRequest(name=run))).run
    parent = run.split("/runs/", 1)[0]
    current = (
        await session.call("pipelines", session.pipelines.GetPipeline, pb.GetPipelineRequest(name=parent))
    ).pipeline
    if current.revision == failed.pipeline_revision:
        return False
    changed = (
        f"{parent} changed since this run: the run used revision {failed.pipeline_revision}, "
        f"the pipeline is now at revision {current.revision}"
    )
    if not sys.stdin.isatty():
        print(f"{changed}; resuming the run's revision (pass --latest to run the fixed one)", file=sys.stderr)
        return False
    prompt = f"{changed}. Resume with revision {current.revision}? [Y/n] "
    answer = (await asyncio.to_thread(input, prompt)).strip().lower()
    return answer in ("", "y", "yes")


async def resume_pipeline(session: Session, args: argparse.Namespace) -> int:
    if "/runs/" in args.name:  # the old double meaning, kept working
        print(f"hint: to continue a run use `contentpipe runs resume {args.name}`", file=sys.stderr)
        return await resume_run(session, args)
    pipeline = await _set_state(session, await pipeline_name(session, args.name), pb.PIPELINE_STATE_ACTIVE)
    _print_pipeline_state(pipeline, args.output)
    return EXIT_OK


def _print_pipeline_state(pipeline: pb.Pipeline, fmt: str) -> None:
    if fmt == "table":
        print(f"{pipeline.name} {pb.PipelineState.Name(pipeline.state).removeprefix('PIPELINE_STATE_')}")
    else:
        print_resource(pipeline, fmt)
