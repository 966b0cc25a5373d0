"""The local provider's encoder limit is GENERATION_LOCAL_TIME_LIMIT: named in the error, never retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from contentpipe.common.settings import ConfigError
from contentpipe.generation.adapters.local_provider import LocalProvider
from contentpipe.generation.config import load_config
from contentpipe.generation.domain.catalogue import LOCAL_MODELS
from contentpipe.generation.domain.model import (
    ErrorReason,
    GenerationFailure,
    GenerationKind,
    GenerationOptions,
    PredictionRecord,
)
from contentpipe.generation.service_layer.ports import StepInput

pytestmark = pytest.mark.integration

BASE = {"CONTENTPIPE_JWT_SECRET": "x" * 32}


def _video_step() -> StepInput:
    return StepInput(
        generation_id="g1",
        owner="u1",
        role="video",
        kind=GenerationKind.VIDEO,
        prompt="a fox",
        options=GenerationOptions(width=512, height=288, fps=30, duration_seconds=30),
        spec=LOCAL_MODELS[0],
        deadline=datetime.now(UTC) + timedelta(hours=1),
    )


async def test_encoder_over_its_limit_fails_naming_the_setting_and_is_not_retryable(tmp_path: Path) -> None:
    provider = LocalProvider(lambda suffix: tmp_path / f"out{suffix}", time_limit_seconds=0.001)
    record = PredictionRecord(provider="local", model="local-video", role="video")

    async def checkpoint(progress: float | None) -> None:
        return None

    with pytest.raises(GenerationFailure) as caught:
        await provider.run(_video_step(), record, checkpoint)
    error = caught.value.error
    assert error.reason == ErrorReason.DEADLINE_EXCEEDED.value
    assert error.retryable is False
    assert "GENERATION_LOCAL_TIME_LIMIT (0.001s)" in error.message
    assert "GENERATION_DEADLINE" in error.message  # the ceiling, not the cause
    assert record.status == "failed"


def test_limit_defaults_to_the_deadline_and_may_not_exceed_it() -> None:
    assert load_config(BASE).local_time_limit_seconds == 1800
    assert load_config({**BASE, "GENERATION_DEADLINE": "10m"}).local_time_limit_seconds == 600
    assert load_config({**BASE, "GENERATION_LOCAL_TIME_LIMIT": "2m"}).local_time_limit_seconds == 120
    with pytest.raises(ConfigError, match="GENERATION_LOCAL_TIME_LIMIT: expected a duration above 0 and at most"):
        load_config({**BASE, "GENERATION_DEADLINE": "60s", "GENERATION_LOCAL_TIME_LIMIT": "2m"})
