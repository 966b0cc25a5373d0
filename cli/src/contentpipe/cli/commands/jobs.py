"""`contentpipe jobs ...`: schedules that trigger pipelines."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as pb
from contentpipe.cli.errors import EXIT_OK, EXIT_USAGE, CliError
from contentpipe.cli.manifests import parse_message, read_document
from contentpipe.cli.output import age_col, col, dump, print_list, print_resource, print_table, to_dict
from contentpipe.cli.parsing import SubParsers, add_command, add_group, add_paging, resource_name
from contentpipe.cli.session import Session
from contentpipe.common.ids import new_id
from google.protobuf.timestamp_pb2 import Timestamp

JOB_COLUMNS = [
    col("NAME", "name"),
    col("PIPELINE", "pipeline"),
    col("SCHEDULE", "cron.expression"),
    col("ZONE", "cron.time_zone"),
    col("STATE", "state", enum_prefix="JOB_STATE_"),
    age_col("NEXT FIRE", "next_fire_time"),
    col("LAST OUTCOME", "last_outcome", enum_prefix="JOB_RUN_STATE_"),
]
JOB_RUN_COLUMNS = [
    col("RUN", "name"),
    age_col("NOMINAL", "nominal_time"),
    col("STATE", "state", enum_prefix="JOB_RUN_STATE_"),
    col("ATTEMPT", "attempt"),
    col("PIPELINE RUN", "pipeline_run"),
    col("MESSAGE", "message"),
]


def register(sub: SubParsers) -> None:
    group = add_group(
        sub,
        "jobs",
        help="schedule pipelines: create, list, preview, trigger, pause, resume",
        examples=[
            'contentpipe jobs create --pipeline pipelines/0193... --cron "0 9 * * MON-FRI" --time-zone Europe/Berlin',
            'contentpipe jobs preview --cron "0 9 * * *" --time-zone America/New_York',
        ],
    )
    create = add_command(
        group,
        "create",
        help="create a job from flags or a file mirroring the Job message",
        handler=create_job,
        reads=True,
        examples=[
            'contentpipe jobs create --pipeline pipelines/0193... --cron "0 9 * * *" --time-zone UTC',
            "contentpipe jobs create --pipeline pipelines/0193... --run-time 2026-12-24T18:00:00Z",
            "contentpipe jobs create -f job.yaml --id daily-video",
        ],
    )
    create.add_argument("-f", "--file", help="YAML or JSON with the fields of contentpipe.api.scheduler.v1.Job")
    create.add_argument("--pipeline", help="pipelines/ID or ID")
    create.add_argument("--cron", help='five-field cron expression, e.g. "0 9 * * MON-FRI"')
    create.add_argument("--time-zone", default="", help="IANA zone for --cron (default UTC)")
    create.add_argument("--run-time", help="run once at this RFC 3339 time instead of --cron")
    create.add_argument("--display-name", default="", help="a human name")
    create.add_argument("--id", default="", help="choose the job id (4-63 of [a-z0-9-])")
    create.add_argument("--validate-only", action="store_true", help="check only; create nothing")

    listing = add_command(
        group,
        "list",
        help="list your jobs",
        handler=list_jobs,
        reads=True,
        examples=["contentpipe jobs list", "contentpipe jobs list --pipeline pipelines/0193... --overdue"],
    )
    listing.add_argument("--pipeline", default="", help="only jobs of this pipeline")
    listing.add_argument("--state", choices=("active", "paused", "deactivated"))
    listing.add_argument("--overdue", action="store_true", help="only jobs whose fire time passed without a run")
    add_paging(listing)

    get = add_command(
        group,
        "get",
        help="show one job",
        handler=get_job,
        reads=True,
        examples=["contentpipe jobs get jobs/daily-video"],
    )
    get.add_argument("job", help="jobs/ID or ID")

    preview = add_command(
        group,
        "preview",
        help="show the next fire times of a schedule (or of a job), flagging DST gaps and overlaps",
        handler=preview_schedule,
        reads=True,
        examples=[
            'contentpipe jobs preview --cron "30 2 * * *" --time-zone Europe/Berlin --count 5',
            "contentpipe jobs preview jobs/daily-video",
        ],
    )
    preview.add_argument("job", nargs="?", help="jobs/ID or ID: preview that job's cron schedule")
    preview.add_argument("--cron", help="five-field cron expression")
    preview.add_argument("--time-zone", default="", help="IANA zone (default UTC)")
    preview.add_argument("--count", type=int, default=5, help="how many fire times (default 5)")
    preview.add_argument("--after", help="start after this RFC 3339 time (default now)")

    for name, handler, help_text in (
        ("trigger", trigger_job, "run the job's pipeline now, once, outside its schedule"),
        ("pause", pause_job, "pause a job: nothing fires until resumed"),
        ("resume", resume_job, "resume a paused or deactivated job"),
        ("delete", delete_job, "delete a job and its run records"),
        ("runs", list_job_runs, "list a job's fire times and their outcomes"),
    ):
        command = add_command(
            group,
            name,
            help=help_text,
            handler=handler,
            reads=name != "delete",
            examples=[f"contentpipe jobs {name} jobs/daily-video"],
        )
        command.add_argument("job", help="jobs/ID or ID")
        if name == "pause":
            command.add_argument("--reason", default="", help="why, for the record")
        if name == "runs":
            add_paging(command)


def _timestamp(value: str, flag: str) -> Timestamp:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{flag}: expected an RFC 3339 time like 2026-12-24T18:00:00Z, got {value!r}", EXIT_USAGE
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def create_job(session: Session, args: argparse.Namespace) -> int:
    if args.file:
        job = parse_message(read_document(args.file), pb.Job, source=args.file)
    else:
        job = pb.Job(display_name=args.display_name)
    if args.pipeline:
        job.pipeline = resource_name("pipelines", args.pipeline)
    if args.cron:
        job.cron.CopyFrom(pb.CronSchedule(expression=args.cron, time_zone=args.time_zone))
    elif args.run_time:
        job.run_time.CopyFrom(_timestamp(args.run_time, "--run-time"))
    if not job.pipeline:
        raise CliError("a job needs a pipeline: --pipeline or `pipeline:` in the file", EXIT_USAGE)
    request = pb.CreateJobRequest(job=job, job_id=args.id, request_id=new_id(), validate_only=args.validate_only)
    response = await session.call("scheduler", session.scheduler.CreateJob, request)
    if args.output == "table":
        print_table([to_dict(response.job)], JOB_COLUMNS)
    else:
        print_resource(response.job, args.output)
    return EXIT_OK


async def list_jobs(session: Session, args: argparse.Namespace) -> int:
    state = pb.JobState.Value(f"JOB_STATE_{args.state.upper()}") if args.state else 0
    request = pb.ListJobsRequest(
        page_size=args.page_size,
        page_token=args.page_token,
        pipeline=resource_name("pipelines", args.pipeline) if args.pipeline else "",
        state=state,  # type: ignore[arg-type]
        overdue_only=args.overdue,
    )
    response = await session.call("scheduler", session.scheduler.ListJobs, request)
    print_list(response, "jobs", JOB_COLUMNS, args.output)
    return EXIT_OK


async def get_job(session: Session, args: argparse.Namespace) -> int:
    response = await session.call(
        "scheduler", session.scheduler.GetJob, pb.GetJobRequest(name=resource_name("jobs", args.job))
    )
    print_resource(response.job, args.output)
    return EXIT_OK


async def preview_schedule(session: Session, args: argparse.Namespace) -> int:
    if args.job:
        job = (
            await session.call(
                "scheduler", session.scheduler.GetJob, pb.GetJobRequest(name=resource_name("jobs", args.job))
            )
        ).job
        if not job.HasField("cron"):
            raise CliError(f"{job.name} runs once (at its run_time); only cron schedules can be previewed", EXIT_USAGE)
        cron = job.cron
    elif args.cron:
        cron = pb.CronSchedule(expression=args.cron, time_zone=args.time_zone)
    else:
        raise CliError("give a job or --cron", EXIT_USAGE)
    request = pb.PreviewScheduleRequest(cron=cron, count=args.count)
    if args.after:
        request.start_time.CopyFrom(_timestamp(args.after, "--after"))
    response = await session.call("scheduler", session.scheduler.PreviewSchedule, request)
    if args.output != "table":
        dump(to_dict(response), args.output)
        return EXIT_OK
    rows = []
    for fire in response.fire_times:
        note = "DST gap (shifted)" if fire.in_dst_gap else ("DST overlap (first)" if fire.in_dst_overlap else "")
        rows.append({"utc": to_dict(fire).get("time", ""), "local": fire.local_time, "note": note})
    print(f"{cron.expression} ({cron.time_zone or 'UTC'})")
    print_table(rows, [col("UTC", "utc"), col("LOCAL", "local"), col("NOTE", "note")])
    return EXIT_OK


async def trigger_job(session: Session, args: argparse.Namespace) -> int:
    request = pb.TriggerJobRequest(name=resource_name("jobs", args.job), request_id=new_id())
    response = await session.call("scheduler", session.scheduler.TriggerJob, request)
    if args.output == "table":
        print_table([to_dict(response.job_run)], JOB_RUN_COLUMNS)
        if response.job_run.pipeline_run:
            print(f"follow it: contentpipe runs watch {response.job_run.pipeline_run}", file=sys.stderr)
    else:
        print_resource(response.job_run, args.output)
    return EXIT_OK


async def pause_job(session: Session, args: argparse.Namespace) -> int:
    request = pb.PauseJobRequest(name=resource_name("jobs", args.job), reason=args.reason)
    response = await session.call("scheduler", session.scheduler.PauseJob, request)
    _print_job(response.job, args.output)
    return EXIT_OK


async def resume_job(session: Session, args: argparse.Namespace) -> int:
    response = await session.call(
        "scheduler", session.scheduler.ResumeJob, pb.ResumeJobRequest(name=resource_name("jobs", args.job))
    )
    _print_job(response.job, args.output)
    return EXIT_OK


async def delete_job(session: Session, args: argparse.Namespace) -> int:
    name = resource_name("jobs", args.job)
    await session.call("scheduler", session.scheduler.DeleteJob, pb.DeleteJobRequest(name=name))
    print(f"deleted {name}")
    return EXIT_OK


async def list_job_runs(session: Session, args: argparse.Namespace) -> int:
    request = pb.ListJobRunsRequest(
        parent=resource_name("jobs", args.job), page_size=args.page_size, page_token=args.page_token
    )
    response = await session.call("scheduler", session.scheduler.ListJobRuns, request)
    print_list(response, "job_runs", JOB_RUN_COLUMNS, args.output)
    return EXIT_OK


def _print_job(job: pb.Job, fmt: str) -> None:
    if fmt == "table":
        print_table([to_dict(job)], JOB_COLUMNS)
    else:
        print_resource(job, fmt)
