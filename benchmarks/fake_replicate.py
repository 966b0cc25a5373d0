"""tests/fakes/replicate.FakeReplicate with a fixed latency, in its own process (so the fake's event loop does not
share a core's GIL with the harness). Prints `ready <url>` once listening; stops on SIGTERM/stdin EOF.

    python -m benchmarks.fake_replicate --latency 1.0
"""

from __future__ import annotations

import argparse
import sys

from tests.fakes import LoopbackHTTPServer
from tests.fakes.replicate import FakeReplicate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()
    fake = FakeReplicate(latency=args.latency)
    with LoopbackHTTPServer(fake.app) as server:
        fake.base_url = server.url
        print(f"ready {server.url}", flush=True)
        sys.stdin.read()  # until the harness closes our stdin


if __name__ == "__main__":
    main()
