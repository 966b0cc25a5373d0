"""`contentpipe-scheduler`: serve the gRPC API with the processing loop, run one pass (`tick`), or migrate."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from contentpipe.common.cli import Subcommand, service_main
from contentpipe.common.telemetry import setup_logging, setup_telemetry
from contentpipe.scheduler import bootstrap
from contentpipe.scheduler.config import SERVICE, load_config


async def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return await bootstrap.serve(load_config(environ))


async def _migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(environ)
    setup_logging(SERVICE, config.common.log_level)
    await bootstrap.migrate(config)
    return 0


async def _tick(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(environ)
    # Traced like `serve`: each run the CronJob's pass triggers starts its trace here (exported at exit).
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    return await bootstrap.tick(config, args.limit)


def _tick_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, help="due jobs to process at most (default: 500)")


COMMANDS = [
    Subcommand("serve", "serve the gRPC API and process due jobs until SIGTERM", _serve),
    Subcommand("migrate", "upgrade the database schema to the latest revision", _migrate),
    Subcommand(
        "tick",
        "one pass (reconcile triggered runs, process due jobs), then exit: 0, 1 database or 3 pipelines unreachable",
        _tick,
        _tick_arguments,
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(SERVICE, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
