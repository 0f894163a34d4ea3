"""Blocking file work of the server (run in worker threads): archives, matching, listings."""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .parsers import FAIL_ENTRY_MARKER, FAIL_UPLOAD_MARKER, HEAD_SIZE, Parser, match_parser

__all__ = [
    "ARCHIVE_SUFFIXES",
    "BadArchiveError",
    "MatchResult",
    "MatchedFile",
    "add_files",
    "compression_format",
    "is_safe_relative_path",
    "iter_files",
    "match_files",
    "sniff_archive",
]

#: Name suffixes NOMAD extracts (``nomad.common.decompress_file_extensions``).
ARCHIVE_SUFFIXES: dict[str, str] = {
    ".zip": "zip",
    ".tgz": "tar",
    ".gz": "tar",
    ".tar.gz": "tar",
    ".tar.bz2": "tar",
    ".tar": "tar",
    ".eln": "zip",
}

_CHUNK = 1024 * 1024


class BadArchiveError(Exception):
    """An archive that NOMAD would try to extract cannot be read."""

    def __init__(self, message: str, *, unreadable: bool = False) -> None:
        super().__init__(message)
        self.unreadable = unreadable


def is_safe_relative_path(path: str) -> bool:
    """A relative POSIX path that stays inside its root (no ``..``, not absolute)."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    normalized = posixpath.normpath(path)
    return normalized != ".." and not normalized.startswith("../") and normalized != "."


def compression_format(path: Path, name: str) -> str | None:
    """``"zip"``/``"tar"`` when ``name`` has an archive suffix, ``"error"`` if unreadable."""
    lower = name.lower()
    for suffix, fmt in ARCHIVE_SUFFIXES.items():
        if lower.endswith(suffix):
            if fmt == "zip":
                return "zip" if zipfile.is_zipfile(path) else "error"
            return "tar" if tarfile.is_tarfile(path) else "error"
    return None


def sniff_archive(path: Path) -> str | None:
    """``".zip"`` or ``".tar"`` when the file content is such an archive, else ``None``."""
    if zipfile.is_zipfile(path):
        return ".zip"
    if tarfile.is_tarfile(path):
        return ".tar"
    return None


def _copy_stream(src: IO[bytes], dst_path: Path) -> None:
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with open(dst_path, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def _check_merge(dst: Path, want_file: bool, rel: str) -> None:
    if dst.exists() and dst.is_file() != want_file:
        raise BadArchiveError(f"Cannot merge a file with a directory or vice versa: {rel}.")


def add_files(staging: Path, names: list[str], raw_dir: Path) -> None:
    """Move staged files into ``raw_dir``, extracting archives (one level, like NOMAD).

    NOMAD (``StagingUploadFiles.add_rawfiles``) extracts only the uploaded archive
    itself; an archive inside it is stored as a plain file. Unsafe member paths and
    symbolic links are skipped.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = staging / name
        if not src.exists():
            # Added by a run that a restart interrupted after this thread had finished
            # (the worker's cancellation waits for the thread): the files are in place.
            continue
        fmt = compression_format(src, name)
        if fmt == "error":
            raise BadArchiveError(
                "Cannot extract file. Bad file format or file extension?", unreadable=True
            )
        try:
            if fmt == "zip":
                _extract_zip(src, raw_dir)
            elif fmt == "tar":
                _extract_tar(src, raw_dir)
            else:
                dst = raw_dir / name
                _check_merge(dst, True, name)
                os.replace(src, dst)
        except BadArchiveError:
            raise
        except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as exc:
            raise BadArchiveError(
                "Cannot extract file. Bad file format or file extension?", unreadable=True
            ) from exc
    for name in names:
        (staging / name).unlink(missing_ok=True)


def _extract_zip(src: Path, raw_dir: Path) -> None:
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            rel = info.filename.rstrip("/")
            mode = info.external_attr >> 16
            if not is_safe_relative_path(rel) or stat.S_ISLNK(mode):
                continue
            dst = raw_dir / rel
            if info.is_dir():
                _check_merge(dst, False, rel)
                dst.mkdir(parents=True, exist_ok=True)
                continue
            _check_merge(dst, True, rel)
            with zf.open(info) as member:
                _copy_stream(member, dst)


def _extract_tar(src: Path, raw_dir: Path) -> None:
    with tarfile.open(src, mode="r|*") as tar:
        for member in tar:
            rel = member.name.rstrip("/")
            if not is_safe_relative_path(rel):
                continue
            dst = raw_dir / rel
            if member.isdir():
                _check_merge(dst, False, rel)
                dst.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                _check_merge(dst, True, rel)
                extracted = tar.extractfile(member)
                if extracted is not None:
                    with extracted:
                        _copy_stream(extracted, dst)


def iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file below ``root`` as (POSIX relative path, path), sorted."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if path.is_symlink() or not path.is_file():
                continue
            yield path.relative_to(root).as_posix(), path


@dataclass(frozen=True, slots=True)
class MatchedFile:
    """A mainfile found in the raw directory."""

    mainfile: str
    parser: Parser
    fail_entry: bool


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Mainfiles of an upload, and whether a file asked the whole upload to fail."""

    mainfiles: tuple[MatchedFile, ...]
    fail_upload: bool


def match_files(raw_dir: Path) -> MatchResult:
    """Match every raw file against the parsers (first 12,000 bytes, like NOMAD)."""
    found = []
    fail_upload = False
    for rel, path in iter_files(raw_dir):
        with open(path, "rb") as f:
            head = f.read(HEAD_SIZE)
        if FAIL_UPLOAD_MARKER in head:
            fail_upload = True
        parser = match_parser(rel, head)
        if parser is not None:
            found.append(MatchedFile(rel, parser, FAIL_ENTRY_MARKER in head))
    return MatchResult(tuple(found), fail_upload)
