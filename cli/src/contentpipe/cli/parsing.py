"""argparse plumbing shared by every command: options accepted before or after the subcommand, examples in help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from contentpipe.cli.output import FORMATS

Handler = Callable[[Any, argparse.Namespace], Awaitable[int]]
SubParsers = Any  # argparse's _SubParsersAction is private


def global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The connection options; on subcommands their defaults are suppressed so a top-level value is kept."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection options")
    group.add_argument(
        "--data-dir",
        default=default(None),
        help="local stack directory (databases, logs, JWT secret); env CONTENTPIPE_DATA_DIR; default ./.contentpipe",
    )
    group.add_argument(
        "--token", default=default(None), help="bearer JWT; env CONTENTPIPE_TOKEN; default: local user of `up`"
    )
    group.add_argument(
        "--config",
        default=default(None),
        help="TOML config file; env CONTENTPIPE_CONFIG; default ~/.config/contentpipe/config.toml",
    )
    group.add_argument("--timeout", type=float, default=default(30.0), help="seconds per call (default 30)")


_COMMON = argparse.ArgumentParser(add_help=False)
global_options(_COMMON, suppress=True)


def add_command(
    sub: SubParsers,
    name: str,
    *,
    help: str,
    handler: Handler | None = None,
    examples: Sequence[str] = (),
    description: str | None = None,
    reads: bool = False,
    aliases: Sequence[str] = (),
    deprecated_for: str | None = None,
) -> argparse.ArgumentParser:
    """One subcommand. `deprecated_for`: an old spelling kept working, hidden from help, pointing to the new one."""
    if deprecated_for is not None and handler is not None:
        handler = _deprecated(handler, name, deprecated_for)
    epilog = None
    if examples:
        epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description or help[:1].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_COMMON] if handler is not None else [],
        aliases=list(aliases),
    )
    if reads:
        parser.add_argument(
            "-o",
            "--output",
            choices=FORMATS,
            default="table",
            help="table (default), json, yaml, or name (resource names only, for scripts)",
        )
    if handler is not None:
        parser.set_defaults(handler=handler)
    if deprecated_for is not None:
        # argparse has no hidden subcommands: drop its line from the parent's command list (it still parses).
        sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest != name]
    return parser


def _deprecated(handler: Handler, name: str, replacement: str) -> Handler:
    async def run(session: Any, args: argparse.Namespace) -> int:
        print(f"hint: `{name}` here is deprecated; use `{replacement}`", file=sys.stderr)
        return await handler(session, args)

    return run


def add_group(
    sub: SubParsers, name: str, *, help: str, examples: Sequence[str] = (), aliases: Sequence[str] = ()
) -> SubParsers:
    parser = add_command(sub, name, help=help, examples=examples, aliases=aliases)
    parser.set_defaults(handler=None, group_parser=parser)
    return parser.add_subparsers(title="commands", metavar="COMMAND")


def add_paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=50, help="results per page (default 50)")
    parser.add_argument("--page-token", default="", help="continue from a previous page")


def resource_name(collection: str, value: str) -> str:
    """Accept `abc` or `pipelines/abc` for a resource of `collection`."""
    return value if value.startswith(f"{collection}/") else f"{collection}/{value}"
