"""`contentpipe-pipelines`: serve the gRPC API and the run engine, migrate, or drain pending runs once."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from contentpipe.common.cli import Subcommand, service_main
from contentpipe.common.telemetry import setup_logging
from contentpipe.pipelines import bootstrap
from contentpipe.pipelines.config import SERVICE, load_config


async def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return await bootstrap.serve(load_config(environ))


async def _migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(environ)
    setup_logging(SERVICE, config.common.log_level)
    await bootstrap.migrate(config)
    return 0


async def _process_pending(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return await bootstrap.process_pending(load_config(environ))


def _configure_process_pending(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="drain queued and orphaned runs, then exit (the only mode: a CronJob runs it repeatedly)",
    )


COMMANDS = [
    Subcommand("serve", "serve the gRPC API and execute runs until SIGTERM", _serve),
    Subcommand("migrate", "upgrade the database schema to the latest revision", _migrate),
    Subcommand(
        "process-pending",
        "execute queued and orphaned runs to their end, then exit",
        _process_pending,
        _configure_process_pending,
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(SERVICE, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
