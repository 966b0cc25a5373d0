"""The images' Dockerfiles, checked without a container engine: what they copy exists, the entry point is the
package's console script, the runtime is hardened; and the build stage's uv commands, replayed in a temporary
directory with the same copies, produce a venv holding the entry point (only that member, no dev tools)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.manifests import REPO_ROOT, SERVICES, pod_spec, rendered

IMAGES = {**{svc: REPO_ROOT / "services" / svc / "Dockerfile" for svc in SERVICES}, "cli": REPO_ROOT / "cli/Dockerfile"}
PORTS = {"generation": 50051, "oauth": 50052, "pipelines": 50053, "scheduler": 50054}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """Dockerfile → stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def package_of(image: str) -> str:
    return "contentpipe-cli" if image == "cli" else f"contentpipe-{image}"


def console_script(image: str) -> str:
    pyproject = REPO_ROOT / ("cli" if image == "cli" else f"services/{image}") / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    (name,) = scripts
    return str(name)


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


@pytest.mark.unit
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_copies_existing_paths_and_runs_the_console_script(image: str) -> None:
    build, runtime = parse(IMAGES[image])
    assert build.name == "build" and runtime.name is None
    assert build.base == runtime.base and build.base.startswith("python:3.11-slim")
    for args in build.all("COPY"):
        *sources, _dest = args.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{image}: COPY {source} does not exist"
    syncs = [a for a in build.all("RUN") if a.startswith("uv sync")]
    assert len(syncs) == 2 and all("--locked" in s and "--no-dev" in s for s in syncs)
    if image != "cli":
        assert all(f"--package {package_of(image)}" in s for s in syncs)
    assert _env(build)["UV_COMPILE_BYTECODE"] == "1"
    # Runtime: only the venv from the build stage, non-root numeric user, SIGTERM, the console script.
    assert runtime.all("COPY") == ["--from=build /app/.venv /app/.venv"]
    (user,) = runtime.all("USER")
    assert all(part.isdigit() and int(part) >= 10000 for part in user.split(":"))
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert entrypoint == f'["{console_script(image)}"]'
    if image in PORTS:
        assert runtime.all("EXPOSE") == [str(PORTS[image])]
        assert runtime.all("CMD") == ['["serve"]']
        assert _env(runtime)[f"{image.upper()}_GRPC_HOST"] == "0.0.0.0"


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_manifests_run_the_service_image_as_the_dockerfile_user(service: str) -> None:
    (_, runtime) = parse(IMAGES[service])
    uid, gid = (int(x) for x in runtime.all("USER")[0].split(":"))
    spec = pod_spec(rendered("prod").get("Deployment", service))
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (uid, gid)
    assert spec["containers"][0]["image"].endswith(f"/{service}:0.1.0")


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_stage_replayed_without_docker_yields_the_entry_point(image: str, tmp_path: Path) -> None:
    """Replays the build stage's COPY and `uv sync` lines (offline, from uv's cache) in a scratch context."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not on PATH")
    (build, _) = parse(IMAGES[image])
    context = tmp_path / "src"
    context.mkdir()
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        **_env(build),
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_OFFLINE": "1",
        "UV_COMPILE_BYTECODE": "0",  # the image compiles; here it would only cost CPU
        "UV_LINK_MODE": "hardlink",
        "UV_PYTHON": sys.executable,
    }
    env.pop("VIRTUAL_ENV", None)
    for keyword, args in build.instructions:
        if keyword == "COPY":
            *sources, dest = args.split()
            for source in sources:
                src = REPO_ROOT / source
                if src.is_dir():  # Docker copies a directory's contents into the destination
                    shutil.copytree(
                        src, context / dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    target = context / dest / src.name if dest.endswith(("/", ".")) else context / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
        elif keyword == "RUN" and args.startswith("uv sync"):
            result = subprocess.run(
                [uv, *shlex.split(args)[1:]],
                cwd=context,
                env=env,
                capture_output=True,
                text=True,
                timeout=500,
                check=False,
            )
            assert result.returncode == 0, f"{args}\n{result.stderr[-4000:]}"
    script = venv / "bin" / console_script(image)
    assert script.exists()
    help_run = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert help_run.returncode == 0, help_run.stderr
    installed = {p.name.split("-")[0].lower() for p in (venv / "lib").glob("python3.*/site-packages/*.dist-info")}
    assert "pytest" not in installed and "ruff" not in installed and "mypy" not in installed  # no dev tools
    if image != "cli":
        others = {f"contentpipe_{s}" for s in SERVICES if s != image}
        assert not (others & installed), f"{image} image installs other services: {others & installed}"
