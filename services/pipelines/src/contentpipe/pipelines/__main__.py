"""`contentpipe-pipelines`: serve the gRPC API or migrate the database."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from contentpipe.common.cli import Subcommand, not_implemented, service_main
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


COMMANDS = [
    Subcommand("serve", "serve the gRPC API until SIGTERM", _serve),
    Subcommand("migrate", "upgrade the database schema to the latest revision", _migrate),
    Subcommand("process-pending", "advance pending pipeline runs once and exit (not implemented yet)", not_implemented),
]


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(SERVICE, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
