"""`make demo`'s script from a clean data dir: it succeeds in well under two minutes, the MP4 decodes to the asked
size and length, the outbox post exists, and nothing is left running."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.cli.harness import REPO_ROOT, cli_environ, processes_using

SERVICES = ("generation", "oauth", "pipelines", "scheduler")

pytestmark = pytest.mark.e2e


def test_demo_script_produces_a_playable_video_and_an_outbox_post(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    started = time.monotonic()
    result = subprocess.run(  # noqa: PLW1510 - asserted below
        ["bash", "scripts/demo.sh"],
        cwd=REPO_ROOT,
        env=cli_environ({"CONTENTPIPE_DEMO_DIR": str(demo_dir)}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert elapsed < 120, f"the demo took {elapsed:.0f} s"

    video = re.search(r"video: video/mp4 (\d+)x(\d+), ([\d.]+)s -> (/\S+\.mp4)", result.stdout)
    assert video, output
    spec = yaml.safe_load((REPO_ROOT / "examples/local-demo.yaml").read_text())["steps"][0]["generate_content"][
        "options"
    ]
    assert (int(video.group(1)), int(video.group(2))) == (spec["width"], spec["height"])

    # Decode every frame with ffmpeg: the file plays, with the asked size and length.
    frames = imageio_ffmpeg.read_frames(video.group(4))
    meta = next(frames)
    assert tuple(meta["size"]) == (spec["width"], spec["height"])
    frame_bytes = spec["width"] * spec["height"] * 3
    count = 0
    for frame in frames:
        assert len(frame) == frame_bytes
        count += 1
    assert count / meta["fps"] == pytest.approx(spec["duration_seconds"], abs=0.1)
    assert meta["fps"] == pytest.approx(spec["fps"], abs=0.5)

    post = re.search(r"post: posted posts/\S+ via connections/\S+ -> (\S+)", result.stdout)
    assert post, output
    post_path = Path(post.group(1))
    assert post_path.exists(), post_path
    assert str(post_path.resolve()).startswith(str(demo_dir.resolve()))
    document = json.loads(post_path.read_text())
    assert document["text"].strip(), "the caption step's text is the post text"
    [media] = document["media"]
    assert media["content_type"] == "video/mp4"
    copied = post_path.parent / media["file"]
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == media["sha256"]
    assert copied.read_bytes() == Path(video.group(4)).read_bytes()
    assert re.search(r"schedule: next scheduled run \S+T09:00:00Z \(jobs/\S+\)", result.stdout), output

    assert not (demo_dir / "stack.json").exists()
    assert processes_using(demo_dir) == []
    secret = demo_dir / "jwt-secret"
    assert oct(os.stat(secret).st_mode & 0o777) == "0o600"


@pytest.mark.timeout(600)
def test_demo_installs_only_what_running_needs(tmp_path: Path) -> None:
    """The demo's install line, into a fresh environment: services and CLI run, no test/lint/deploy tooling."""
    script = (REPO_ROOT / "scripts/demo.sh").read_text()
    [install] = re.findall(r'^"\$\{UV\[@\]\}" (sync [^#\n]*)', script, flags=re.MULTILINE)
    venv = tmp_path / "venv"
    env = cli_environ({"UV_PROJECT_ENVIRONMENT": str(venv)})
    result = subprocess.run(  # noqa: PLW1510 - asserted below
        ["uv", *install.split()], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    for tool in ("pytest", "mypy", "ruff", "grpcurl", "kubectl", "bandit"):
        assert not (venv / "bin" / tool).exists(), f"make demo installed {tool}"
    for command in (["contentpipe", "--version"], *([f"contentpipe-{svc}", "--help"] for svc in SERVICES)):
        ran = subprocess.run(  # noqa: PLW1510 - asserted below
            [str(venv / "bin" / command[0]), *command[1:]], env=env, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
