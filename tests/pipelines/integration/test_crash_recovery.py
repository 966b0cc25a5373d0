"""kill -9 of the pipelines process mid-run: after a restart every run finishes, with no duplicate child."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb

from tests.pipelines.fakes import FakePeers
from tests.pipelines.integration.support import Client, create, generate_step, post_step, run, start_pipelines
from tests.support import ServiceProcess

pytestmark = pytest.mark.integration
RUNS = 4


@pytest.fixture
def peers() -> Iterator[FakePeers]:
    with FakePeers() as fakes:
        yield fakes


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _kill(service: ServiceProcess) -> None:
    assert service.process is not None
    service.process.kill()  # SIGKILL: no graceful shutdown, leases stay taken until they expire
    service.process.wait()


def test_killed_mid_generation_and_after_post_created_every_run_finishes_once(
    start_service: Callable[..., ServiceProcess], own_database_url: str, peers: FakePeers
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    peers.behaviour.generation_seconds = 1.0
    peers.behaviour.publish_seconds = 1.0
    targets = [peers.add_connection(user), peers.add_connection(user)]

    service = start_pipelines(start_service, own_database_url, peers)
    client = Client(service.address, user)
    pipeline = create(client, generate_step(), post_step(targets))
    names = [run(client, pipeline, request_id=f"r{i}").name for i in range(RUNS)]
    client.close()

    # 1. Every run has its generation in flight: kill.
    _wait(lambda: len(peers.state.generations) == RUNS)
    _kill(service)

    # 2. Restart; once a post exists (created, not yet published), kill again.
    service = start_pipelines(start_service, own_database_url, peers)
    _wait(lambda: len(peers.state.posts) >= 1, timeout=30)
    _kill(service)

    # 3. Restart and let everything finish.
    service = start_pipelines(start_service, own_database_url, peers)
    client = Client(service.address, user)
    finished = [client.wait_run(name, timeout=60) for name in names]
    client.close()

    assert [r.state for r in finished] == [pb.PIPELINE_RUN_STATE_SUCCEEDED] * RUNS, finished
    generations_per_run = Counter(g.request_id.split("-s")[0] for g in peers.state.generations.values())
    assert len(peers.state.generations) == RUNS
    assert set(generations_per_run.values()) == {1}
    posts_per_target = Counter((p.request_id.split("-s")[0], p.connection) for p in peers.state.posts.values())
    assert len(posts_per_target) == RUNS * len(targets)
    assert set(posts_per_target.values()) == {1}
    for finished_run in finished:
        assert finished_run.steps[0].outputs.generation in peers.state.generations
        assert len(finished_run.steps[0].children) == 1
        assert len(set(finished_run.steps[1].outputs.posts)) == len(targets)
