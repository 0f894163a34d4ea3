"""``nomad-bulk download``: entries' raw files, streamed to disk, optionally extracted.

Entries come from ``--manifest PIDs.json`` (saved per calculation folder), from
``--upload-id`` (every entry of those uploads) or from ``--entry-id``.
Extraction is zip-slip safe: absolute paths, ``..`` and links are refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import zipfile
from collections.abc import Iterable
from functools import partial
from pathlib import Path, PurePosixPath

import anyio
import anyio.to_thread

from ..client import NomadClient
from ..config import Settings
from ..errors import ConfigError, NomadBulkError, PackingError
from . import EXIT_FAILED_ITEMS, EXIT_INTERRUPTED, EXIT_OK
from .upload import add_connection_arguments, settings_from_args

__all__ = ["HELP", "add_arguments", "download", "run", "safe_extract"]

HELP = "download entries' raw files (of a manifest, uploads or entries)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``nomad-bulk download``."""
    source = parser.add_argument_group("what to download (one or more)")
    source.add_argument(
        "--manifest",
        metavar="PATH",
        type=Path,
        help="a PIDs.json written by `nomad-bulk upload`: every entry, per calculation",
    )
    source.add_argument(
        "--upload-id", metavar="ID", action="append", default=[], help="every entry of an upload"
    )
    source.add_argument("--entry-id", metavar="ID", action="append", default=[], help="one entry")
    parser.add_argument(
        "--dest", metavar="DIR", type=Path, default=Path("nomad-downloads"), help="target folder"
    )
    parser.add_argument(
        "--extract",
        action="store_true",
        help="unpack each entry's zip (safely) and delete the zip",
    )
    parser.add_argument(
        "--parallel", metavar="N", type=int, default=4, help="downloads at once (default 4)"
    )
    add_connection_arguments(parser)


def _member_target(dest: Path, info: zipfile.ZipInfo, strip: int) -> Path | None:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise PackingError(f"refusing to extract {name!r}: it would escape {dest}")
    parts = path.parts[strip:]
    if not parts:
        return None
    target = dest.joinpath(*parts)
    resolved = target.resolve()
    if not resolved.is_relative_to(dest.resolve()):
        raise PackingError(f"refusing to extract {name!r}: it would escape {dest}")
    return target


def safe_extract(archive: Path, dest: Path, *, strip: int = 0) -> list[Path]:
    """Extract ``archive`` into ``dest``; refuse members that would land outside it.

    ``strip`` drops that many leading path components (NOMAD's entry zips start
    with the upload id). Links and special files are skipped. Blocking.
    """
    written: list[Path] = []
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir() or (kind and kind != stat.S_IFREG):
                continue  # folders are made on demand; links and devices never
            if info.filename == "manifest.json":
                continue  # NOMAD's metadata of the entry, not one of its files
            target = _member_target(dest, info, strip)
            if target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            written.append(target)
    return written


def _from_manifest(path: Path) -> list[tuple[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the manifest {path}: {exc}") from exc
    pairs: list[tuple[str, str]] = []
    for key, ids in (data.get("entry_ids") or {}).items():
        for entry_id in [ids] if isinstance(ids, str) else ids:
            pairs.append((str(key), str(entry_id)))
    return pairs


async def download(
    client: NomadClient,
    targets: Iterable[tuple[str, str]],
    dest: Path,
    *,
    extract: bool = False,
    parallel: int = 4,
) -> tuple[list[Path], list[str]]:
    """Download ``(folder, entry_id)`` pairs below ``dest``; return files and failures."""
    limiter = anyio.CapacityLimiter(max(1, parallel))
    written: list[Path] = []
    failures: list[str] = []

    async def one(folder: str, entry_id: str) -> None:
        async with limiter:
            target_dir = dest.joinpath(*PurePosixPath(folder).parts)
            await anyio.Path(target_dir).mkdir(parents=True, exist_ok=True)
            try:
                archive = await client.download_entry_raw(entry_id, target_dir)
                if extract:
                    files = await anyio.to_thread.run_sync(
                        partial(safe_extract, archive, target_dir, strip=1)
                    )
                    await anyio.Path(archive).unlink()
                    written.extend(files)
                else:
                    written.append(archive)
            except NomadBulkError as exc:
                failures.append(f"{entry_id}: {exc}")

    async with anyio.create_task_group() as tg:
        for folder, entry_id in targets:
            if ".." in PurePosixPath(folder).parts or PurePosixPath(folder).is_absolute():
                failures.append(f"{entry_id}: unsafe folder name {folder!r}")
                continue
            tg.start_soon(one, folder, entry_id)
    return written, failures


async def _main(args: argparse.Namespace, settings: Settings) -> tuple[list[Path], list[str]]:
    async with NomadClient(settings) as client:
        targets: list[tuple[str, str]] = []
        if args.manifest is not None:
            targets += await anyio.to_thread.run_sync(_from_manifest, args.manifest)
        for upload_id in args.upload_id:
            entries = await client.get_entries(upload_id)
            targets += [(upload_id, entry.entry_id) for entry in entries]
        targets += [(entry_id, entry_id) for entry_id in args.entry_id]
        return await download(
            client, targets, args.dest, extract=args.extract, parallel=args.parallel
        )


def run(args: argparse.Namespace) -> int:
    """Run ``nomad-bulk download``."""
    if args.manifest is None and not args.upload_id and not args.entry_id:
        raise ConfigError("nothing to download: give --manifest, --upload-id or --entry-id")
    settings = settings_from_args(args, need_credentials=False)
    try:
        written, failures = anyio.run(partial(_main, args, settings), backend="asyncio")
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"{len(written)} files written below {os.fspath(args.dest)}")
    return EXIT_FAILED_ITEMS if failures else EXIT_OK
