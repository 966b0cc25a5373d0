"""`python -m tests.oauth.posting.posting_process`: the posting half of the oauth service as its own process.

The real PostingService, queue worker and publishers, wired by `build_posting` exactly as `bootstrap.py` does, with
the connections half replaced by a TokenProvider read from the JSON file in POSTING_TEST_CONNECTIONS. Crash tests
SIGKILL this process.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from contentpipe.common.database import create_engine, database_ready, run_migrations
from contentpipe.common.server import run_server
from contentpipe.common.settings import load_common_settings
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.oauth.adapters.publishers.settings import load_posting_config
from contentpipe.oauth.posting_bootstrap import build_posting

from tests.fakes.publishing_tokens import FakeTokens
from tests.oauth.posting.harness import MIGRATIONS, VERSION_TABLE


async def main() -> int:
    environ = dict(os.environ)
    common = load_common_settings("oauth", environ)
    setup_telemetry("oauth", log_level=common.log_level, otlp_endpoint=None)
    engine = create_engine(common.database_url)
    tokens = FakeTokens(Path(environ["POSTING_TEST_CONNECTIONS"]))
    app = build_posting(common, load_posting_config(environ, common.data_dir, common.grpc_port), engine, tokens)

    async def ready() -> bool:
        await run_migrations(common.database_url, MIGRATIONS, VERSION_TABLE)
        return await database_ready(engine, VERSION_TABLE, MIGRATIONS)

    return await run_server(
        common, [app.registration], on_ready=ready, background=[app.worker.run], on_shutdown=[app.close, engine.dispose]
    )


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
