"""Helpers for the packing tests: build folder trees and zips from dicts."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest

Content = bytes | str


def write_tree(root: Path, files: Mapping[str, Content]) -> Path:
    """Create ``files`` (POSIX path → content) under ``root`` and return ``root``."""
    for name, content in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_zip(path: Path, members: Mapping[str, Content]) -> Path:
    """Create a zip at ``path`` holding ``members``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def zip_contents(path: Path) -> dict[str, bytes]:
    """Every member of a zip, by name."""
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty discovery root."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A spool directory outside the root."""
    return tmp_path / "spool"
