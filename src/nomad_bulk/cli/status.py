"""``nomad-bulk status``: summarise a run from its journal (no network)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..engine.options import Metadata
from ..engine.report import ItemReport, ItemStatus, build_items
from ..journal import STAGES, Journal, default_journal_path
from . import EXIT_OK

__all__ = ["HELP", "add_arguments", "run", "summarise"]

HELP = "summarise a run from its journal: counts, stages and failures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``nomad-bulk status``."""
    parser.add_argument(
        "root",
        metavar="ROOT",
        type=Path,
        nargs="?",
        default=Path.cwd(),
        help="the folder that was uploaded (default: the current folder)",
    )
    parser.add_argument(
        "--journal",
        metavar="PATH",
        type=Path,
        help="the journal to read (default: ROOT/.nomad-bulk/journal.sqlite)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _metadata(last_run: Mapping[str, Any]) -> Metadata:
    meta = last_run.get("metadata") or {}
    return Metadata(
        dataset_id=meta.get("dataset_id"),
        coauthors=tuple(meta.get("coauthors") or ()),
        references=tuple(meta.get("references") or ()),
        comment=meta.get("comment"),
        embargo=int(meta.get("embargo") or 0),
    )


def _item_json(item: ItemReport) -> dict[str, Any]:
    return {
        "key": item.key,
        "status": item.status.value,
        "stage": item.stage,
        "upload_id": item.upload_id,
        "entry_ids": list(item.entry_ids),
        "message": item.message,
    }


def summarise(journal_path: Path) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-able data."""
    journal = Journal.open(journal_path, create=False)
    try:
        info = journal.info()
        last_run: dict[str, Any] = json.loads(info.get("last_run") or "{}")
        items = build_items(
            journal, publish=bool(last_run.get("publish")), metadata=_metadata(last_run)
        )
        stages = journal.stage_counts()
    finally:
        journal.close()
    counts = {status.value: 0 for status in ItemStatus}
    for item in items:
        counts[item.status.value] += 1
    manifest = Path(info.get("manifest") or journal_path.parent / "PIDs.json")
    return {
        "journal": str(journal_path),
        "root": info.get("root"),
        "url": info.get("url"),
        "run_id": info.get("run_id"),
        "dataset_id": info.get("dataset_id"),
        "dataset_name": info.get("dataset_name"),
        "publish": bool(last_run.get("publish")),
        "grouping": json.loads(info.get("grouping") or "{}"),
        "calculations": len(items),
        "counts": counts,
        "uploads_by_stage": {s: stages.get(s, 0) for s in (*STAGES, "failed")},
        "failed": [_item_json(i) for i in items if i.status is ItemStatus.FAILED],
        "pending": [i.key for i in items if i.status is ItemStatus.PENDING],
        "manifest": str(manifest) if manifest.exists() else None,
    }


def _text(data: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{n} {name}" for name, n in data["counts"].items() if n) or "none"
    stages = ", ".join(f"{name} {n}" for name, n in data["uploads_by_stage"].items() if n)
    lines = [
        f"Journal:      {data['journal']}",
        f"Root:         {data['root']}",
        f"NOMAD:        {data['url']}",
    ]
    if data.get("dataset_name") or data.get("dataset_id"):
        lines.append(f"Dataset:      {data.get('dataset_name') or ''} ({data.get('dataset_id')})")
    lines.append(f"Publishing:   {'yes' if data['publish'] else 'no'}")
    lines.append(f"Calculations: {data['calculations']}: {counts}")
    lines.append(f"Uploads:      {stages or 'none'}")
    failed = data["failed"]
    for item in failed[:50]:
        lines.append(f"  FAILED {item['key']}: {item['message'] or 'no message'}")
    if len(failed) > 50:
        lines.append(f"  ... and {len(failed) - 50} more failures")
    if data["pending"]:
        lines.append(f"{len(data['pending'])} calculations unfinished: re-run the upload to go on")
    if data["manifest"]:
        lines.append(f"Manifest:     {data['manifest']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``nomad-bulk status``."""
    path = args.journal or default_journal_path(args.root)
    data = summarise(path)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_text(data))
    return EXIT_OK
