"""Entry point of the `contentpipe` command: parse, resolve the configuration, run one command, map the exit code.

argparse (standard library) rather than click/typer: no extra dependency, start-up stays fast, and the few things
we need (options before or after the subcommand, examples in every `--help`) are a few lines on top of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

from contentpipe.cli.commands import completion, connections, content, jobs, local, pipelines
from contentpipe.cli.config import resolve_config
from contentpipe.cli.errors import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from contentpipe.cli.parsing import global_options
from contentpipe.cli.session import Session

DESCRIPTION = """\
contentpipe: generate content, post it to social platforms, on a schedule.

Start the services locally with `contentpipe up`, then create and run pipelines.
Calls go to CONTENTPIPE_<SERVICE>_ADDR (or the config file, or the services started by
`contentpipe up` in the data dir, or 127.0.0.1:50051-50054) with the token from --token,
CONTENTPIPE_TOKEN, or a token for the local user of `contentpipe up`."""

EPILOG = f"""\
examples:
  contentpipe up --detach
  contentpipe connections connect outbox
  contentpipe pipelines create -f examples/local-demo.yaml
  contentpipe pipelines run pipelines/0193... --wait
  contentpipe down

{EXIT_CODES_HELP}"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contentpipe",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"contentpipe {version('contentpipe-cli')}")
    global_options(parser, suppress=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    local.register(sub)
    pipelines.register(sub)
    jobs.register(sub)
    connections.register(sub)
    content.register(sub)
    completion.register(sub, parser)
    return parser


def print_error(error: CliError) -> None:
    color = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    prefix = "\033[31merror:\033[0m" if color else "error:"
    print(f"{prefix} {error.message}", file=sys.stderr)
    for violation in error.violations:
        print(f"  {violation.field}: {violation.description}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)


async def _run(args: argparse.Namespace, session: Session) -> int:
    try:
        code: int = await args.handler(session, args)
        return code
    finally:
        await session.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        group_parser = getattr(args, "group_parser", parser)
        group_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        config = resolve_config(
            environ=os.environ,
            data_dir=args.data_dir,
            token=args.token,
            config_path=args.config,
            timeout=args.timeout,
        )
        return asyncio.run(_run(args, Session(config)))
    except CliError as error:
        print_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `contentpipe ... | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
