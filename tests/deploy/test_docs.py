"""docs/deploy.md points only at manifests that exist (and so are rendered and validated by tests/deploy)."""

from __future__ import annotations

import re

import pytest

from tests.deploy.manifests import REPO_ROOT

pytestmark = pytest.mark.unit

GUIDE = REPO_ROOT / "docs" / "deploy.md"


def test_every_deploy_k8s_path_in_the_guide_exists() -> None:
    paths = set(re.findall(r"deploy/k8s/[\w./-]*[\w/]", GUIDE.read_text()))
    assert len(paths) > 10
    missing = sorted(p for p in paths if not (REPO_ROOT / p).exists())
    assert missing == []


def test_the_guide_names_every_component_and_overlay() -> None:
    text = GUIDE.read_text()
    for folder in ("components", "overlays"):
        for entry in sorted((REPO_ROOT / "deploy" / "k8s" / folder).iterdir()):
            if entry.name not in ("debug", "network-policies"):
                assert f"{folder}/{entry.name}" in text, entry.name


# Built from pieces so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join(
        [r"\.\./" + "shared/", "/" + "work/", r"\b[Ii]ssues? #?\d", "platform-" + r"apis\.md", "prior-" + r"art\.md"]
    )
)
SCANNED = (
    "docs",
    "CONTRIBUTING.md",
    "README.md",
    "deploy",
    "services",
    "libs/common",
    "cli",
    "tests",
    "benchmarks",
    "Makefile",
)


def test_no_doc_or_comment_points_outside_the_repository() -> None:
    hits = []
    for top in SCANNED:
        root = REPO_ROOT / top
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            if path.suffix not in {".md", ".py", ".yaml", ".yml", ".env", ".toml", ""} or "__pycache__" in path.parts:
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    hits.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()[:100]}")
    assert hits == []
