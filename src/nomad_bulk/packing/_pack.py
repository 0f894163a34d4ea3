"""Packing: a group becomes one deterministic zip in the spool directory.

Same input, same bytes: members in a fixed order (calculations in group order,
files sorted), every timestamp 1980-01-01 00:00, permissions 0644, Unix as the
creating system, zip64 records on every member, and the compression chosen from
the data itself. Files are streamed in 1 MiB chunks, never held whole in memory.

Nested archives: NOMAD extracts only the uploaded archive itself.
``nomad/files/uploads.py::StagingUploadFiles.add_rawfiles`` asks
``nomad/common.py::get_compression_format`` once, about the uploaded file, then
copies every member out as a plain file; a ``.zip`` member is never extracted
(checked against NOMAD 2.0: ``calc/inner.zip`` stays a raw file, no entries come
from it). Hence a ready zip is never put inside another zip: alone in its group
it is uploaded as is; grouped with others, its members are repacked under the
calculation's own folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nomad_bulk.errors import ConfigError, PackingError
from nomad_bulk.packing._discover import Calculation, open_regular, zip_members
from nomad_bulk.packing._group import Group, member_prefix

__all__ = [
    "COMPRESSED_SUFFIXES",
    "DEFAULT_COMPRESS_LEVEL",
    "ZIP_DATE_TIME",
    "PackedUpload",
    "pack_group",
]

#: The timestamp every member gets (the earliest a zip can hold).
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
#: Files with these suffixes are stored: compressing them again costs time and gains nothing.
COMPRESSED_SUFFIXES = frozenset(
    {
        ".7z", ".bz2", ".gz", ".tgz", ".xz", ".txz", ".zst", ".lz4", ".zip", ".rar",
        ".npz", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".mp4", ".mkv", ".pdf",
    }
)  # fmt: skip

#: Deflate level: 6 compresses DFT text about 4.7:1 at ~40 MiB/s per core; 1 gives
#: 4:1 at ~90 MiB/s (see benchmarks/packing.py); 9 gains 4 % for a quarter of the speed.
DEFAULT_COMPRESS_LEVEL = 6

_CHUNK = 1024 * 1024
_SAMPLE = 64 * 1024
# Stored when level-1 deflate saves less than this share of a sample.
_STORE_ABOVE_RATIO = 0.95
_FILE_ATTR = (stat.S_IFREG | 0o644) << 16
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True, slots=True)
class PackedUpload:
    """A file ready to be sent as one upload."""

    path: Path
    file_name: str
    """The name to send with the upload; ends in ``.zip`` so NOMAD extracts it."""
    size: int
    sha256: str
    mainfiles: Mapping[str, tuple[str, ...]]
    """Calculation key → predicted mainfile paths inside the upload."""
    owned: bool
    """True if ``path`` is a spool file the caller may delete (False: a user's ready zip)."""
    group_key: str = ""


class _ReadError(Exception):
    def __init__(self, source: str, exc: BaseException) -> None:
        super().__init__(source)
        self.source = source
        self.exc = exc


@dataclass(frozen=True, slots=True)
class _Member:
    arcname: str
    calculation: Calculation
    name: str  # path relative to the calculation folder, or the member name in its ready zip
    root_real: str | None


def _members(group: Group) -> Iterator[_Member]:
    seen: set[str] = set()
    for calc in group.calculations:
        prefix = member_prefix(calc)
        root_real = os.path.realpath(calc.root) if calc.root is not None else None
        for name in sorted(calc.files):
            arcname = prefix + name
            if arcname in seen:
                raise PackingError(
                    f"Two calculations in upload {group.key} both hold {arcname!r}; "
                    "pack them into separate uploads (per-upload mode)."
                )
            seen.add(arcname)
            yield _Member(arcname, calc, name, root_real)


def _check_inside(path: Path, root_real: str | None) -> None:
    # Discovery checked the links already; this catches a link swapped in since. A
    # swap between this check and the open remains possible, and is out of scope.
    if root_real is None:
        return
    real = os.path.realpath(path)
    if real != root_real and not real.startswith(root_real.rstrip(os.sep) + os.sep):
        raise PackingError(
            f"{path} now resolves to {real}, outside the root {root_real}; links out of "
            "the root are never followed. Copy the file into the folder and run again."
        )


def _open_file(path: Path, root_real: str | None) -> IO[bytes]:
    _check_inside(path, root_real)
    return open_regular(path)


def _method(arcname: str, first: bytes) -> int:
    suffix = os.path.splitext(arcname)[1].lower()
    if suffix in COMPRESSED_SUFFIXES:
        return zipfile.ZIP_STORED
    sample = first[:_SAMPLE]
    if len(sample) >= 512 and len(zlib.compress(sample, 1)) > _STORE_ABOVE_RATIO * len(sample):
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


def _info(arcname: str, method: int, level: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE_TIME)
    info.compress_type = method
    info.create_system = 3
    info.external_attr = _FILE_ATTR
    # Python 3.13 renamed the private attribute; set whichever this version reads.
    setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", level)
    return info


class _Hasher:
    """Hashes the spool file's final bytes, member by member, while it is still cached."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._done = 0
        self.digest = hashlib.sha256()

    def catch_up(self) -> None:
        # zipfile has just rewritten the member's local header, so every byte up to the
        # current end is final.
        self._raw.flush()
        end = self._raw.tell()
        fd = self._raw.fileno()
        while self._done < end:
            chunk = os.pread(fd, min(_CHUNK, end - self._done), self._done)
            if not chunk:
                raise OSError(errno.EIO, "spool file shorter than written")
            self.digest.update(chunk)
            self._done += len(chunk)


def _copy(source: IO[bytes], label: str, zf: zipfile.ZipFile, arcname: str, level: int) -> None:
    try:
        first = source.read(_CHUNK)
    except OSError as exc:
        raise _ReadError(label, exc) from exc
    info = _info(arcname, _method(arcname, first), level)
    with zf.open(info, "w", force_zip64=True) as dst:
        chunk = first
        while chunk:
            dst.write(chunk)
            try:
                chunk = source.read(_CHUNK)
            except OSError as exc:
                raise _ReadError(label, exc) from exc


class _ReadyZip:
    """The ready zip currently being repacked (calculations come one after another)."""

    def __init__(self, path: Path, root_real: str | None) -> None:
        _check_inside(path, root_real)
        self.path = path
        self.zf = zipfile.ZipFile(path)
        try:
            self.members, _, _ = zip_members(self.zf)
        except BaseException:
            self.zf.close()
            raise

    def open(self, name: str) -> IO[bytes]:
        return self.zf.open(self.members[name])


def _source(member: _Member, current: _ReadyZip | None) -> tuple[IO[bytes], str, _ReadyZip | None]:
    calc = member.calculation
    if calc.ready_zip is None:
        path = calc.path.joinpath(*member.name.split("/"))
        try:
            return _open_file(path, member.root_real), str(path), current
        except OSError as exc:
            raise _ReadError(str(path), exc) from exc
    label = f"{calc.ready_zip}:{member.name}"
    try:
        if current is None or current.path != calc.ready_zip:
            if current is not None:
                current.zf.close()
                current = None
            current = _ReadyZip(calc.ready_zip, member.root_real)
        return current.open(member.name), label, current
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError, ValueError) as exc:
        raise _ReadError(label, exc) from exc


def _write_zip(group: Group, raw: IO[bytes], level: int) -> str:
    hasher = _Hasher(raw)
    zf = zipfile.ZipFile(raw, "w", allowZip64=True)
    current: _ReadyZip | None = None
    try:
        for member in _members(group):
            stream, label, current = _source(member, current)
            with stream:
                try:
                    _copy(stream, label, zf, member.arcname, level)
                except (zipfile.BadZipFile, RuntimeError, zlib.error, EOFError) as exc:
                    raise _ReadError(label, exc) from exc
            hasher.catch_up()
    except BaseException:
        # Close the file first so that zipfile cannot append a central directory to a
        # zip that is about to be discarded.
        with suppress(Exception):
            raw.close()
        with suppress(Exception):
            zf.close()
        raise
    finally:
        if current is not None:
            current.zf.close()
    zf.close()
    hasher.catch_up()
    return hasher.digest.hexdigest()


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _as_is(group: Group, calc: Calculation, zip_path: Path) -> PackedUpload:
    if calc.problems:
        raise PackingError(
            f"{zip_path} cannot be uploaded: {calc.problems[0]}"
            if len(calc.problems) == 1
            else f"{zip_path} cannot be uploaded: " + " ".join(calc.problems)
        )
    _check_inside(zip_path, os.path.realpath(calc.root) if calc.root is not None else None)
    try:
        if not zipfile.is_zipfile(zip_path):
            raise PackingError(
                f"{zip_path} is not a zip archive (any more); NOMAD would fail the upload. "
                "Replace it with a valid zip."
            )
        size, sha256 = _hash_file(zip_path)
    except OSError as exc:
        raise PackingError(
            f"{zip_path}: cannot read the file ({exc.strerror or exc}). "
            "Fix its permissions and run again."
        ) from exc
    return PackedUpload(
        path=zip_path,
        file_name=zip_path.name,
        size=size,
        sha256=sha256,
        mainfiles={calc.key: calc.mainfiles},
        owned=False,
        group_key=group.key,
    )


def pack_group(
    group: Group, spool_dir: Path, *, compress_level: int = DEFAULT_COMPRESS_LEVEL
) -> PackedUpload:
    """Build the upload file for a group; blocking, so call it in a worker thread.

    A group that is one ready zip is returned as that zip (``owned=False``, no
    copy). Otherwise a zip named ``<group.key>.zip`` is written into ``spool_dir``
    (created if missing) under a temporary name and renamed into place once
    complete, so no partial file ever carries the final name. Thread-safe:
    concurrent calls share nothing; two calls for the same group write the same bytes
    (with the same ``compress_level`` and zlib).

    Raises:
        PackingError: a file cannot be read, resolves outside the root, or two
            calculations write the same path; the disk is full or the spool
            directory is not writable. No partial file is left behind.
    """
    if not 1 <= compress_level <= 9:
        raise ConfigError(f"compress_level must be between 1 and 9, not {compress_level}.")
    first = group.calculations[0] if len(group.calculations) == 1 else None
    if first is not None and first.ready_zip is not None:
        return _as_is(group, first, first.ready_zip)
    spool = Path(spool_dir)
    final = spool / f"{group.key}.zip"
    try:
        spool.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{group.key}.", suffix=".part", dir=spool)
    except OSError as exc:
        raise _write_error(exc, spool) from exc
    tmp = Path(tmp_name)
    try:
        # mkstemp opened the file read-write, which the hasher's pread needs.
        with open(fd, "wb", buffering=_CHUNK) as raw:
            sha256 = _write_zip(group, raw, compress_level)
            size = raw.tell()
        os.replace(tmp, final)
    except _ReadError as exc:
        _discard(tmp)
        detail = exc.exc.strerror if isinstance(exc.exc, OSError) else None
        raise PackingError(
            f"{exc.source}: cannot read it while packing ({detail or exc.exc}). "
            "It may have changed since discovery; check it and run again."
        ) from exc.exc
    except OSError as exc:
        _discard(tmp)
        raise _write_error(exc, spool) from exc
    except BaseException:
        _discard(tmp)
        raise
    return PackedUpload(
        path=final,
        file_name=final.name,
        size=size,
        sha256=sha256,
        mainfiles={
            calc.key: tuple(member_prefix(calc) + m for m in calc.mainfiles)
            for calc in group.calculations
        },
        owned=True,
        group_key=group.key,
    )


def _discard(tmp: Path) -> None:
    with suppress(OSError):
        tmp.unlink()


def _write_error(exc: OSError, spool: Path) -> PackingError:
    if exc.errno in _DISK_FULL:
        return PackingError(
            f"No space left to write the upload zip in {spool} ({exc.strerror}); the "
            "partial file was removed. Free disk space or choose another spool directory, "
            "then run again."
        )
    return PackingError(
        f"Cannot write the upload zip in {spool} ({exc.strerror or exc}); the partial file "
        "was removed. Check that the spool directory is writable, then run again."
    )
