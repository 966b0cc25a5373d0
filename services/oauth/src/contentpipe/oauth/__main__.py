"""`contentpipe-oauth`: serve the gRPC API or migrate the database."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from contentpipe.common.cli import Subcommand, service_main
from contentpipe.common.telemetry import setup_logging
from contentpipe.oauth import bootstrap
from contentpipe.oauth.config import SERVICE, load_config


async def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return await bootstrap.serve(load_config(environ))


async def _migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(environ)
    setup_logging(SERVICE, config.common.log_level)
    await bootstrap.migrate(config)
    return 0


async def _rotate_keys(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(environ)
    setup_logging(SERVICE, config.common.log_level)
    rewritten = await bootstrap.rotate_keys(config)
    print(f"re-encrypted {rewritten} row(s) under the first key of OAUTH_TOKEN_KEYS")
    return 0


COMMANDS = [
    Subcommand("serve", "serve the gRPC API until SIGTERM", _serve),
    Subcommand("migrate", "upgrade the database schema to the latest revision", _migrate),
    Subcommand("rotate-keys", "re-encrypt every stored token under the first key of OAUTH_TOKEN_KEYS", _rotate_keys),
]


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(SERVICE, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
