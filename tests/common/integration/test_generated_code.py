"""The committed generated code equals a fresh generation from protos/ (no drift, no hand edits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.integration


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    # The venv's bin holds protoc-gen-mypy; put it first on PATH like `uv run` does.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(["bash", "scripts/gen_protos.sh", str(tmp_path)], cwd=REPO_ROOT, env=env, check=True, timeout=120)
    fresh = _files(tmp_path / "contentpipe" / "api")
    committed = _files(REPO_ROOT / "libs" / "api" / "src" / "contentpipe" / "api")
    assert sorted(fresh) == sorted(committed), "file sets differ: run `make gen`"
    drifted = [name for name in fresh if fresh[name] != committed[name]]
    assert not drifted, f"generated code drifted, run `make gen`: {drifted}"
