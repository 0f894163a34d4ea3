"""What every chaos scenario must end with, checked against the server's own state.

:func:`audit` compares the manifest (``PIDs.json``) of a run with the uploads and
datasets the local server holds, and lists every broken promise: duplicates,
orphans, wrongly published uploads, and each place where the manifest and the
server disagree. :func:`fingerprint` reduces a server's state to what an
uninterrupted run determines (groups, entries, metadata), so that two runs can
be compared although their upload ids and names differ.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nomad_bulk.server import DatasetRecord, LocalServer, UploadRecord

__all__ = [
    "TEST1",
    "Audit",
    "ServerView",
    "audit",
    "fingerprint",
    "label_of",
    "read_manifest",
    "view",
]

TEST1 = "68878af7-6845-46c0-b2c1-250d4d8eb470"
#: The engine's upload names: ``<label> [nomad-bulk <12 hex digits>]``.
_NAME = re.compile(r"^(?P<label>.*) \[nomad-bulk (?P<tag>[0-9a-f]{12})\]$")


@dataclass(frozen=True, slots=True)
class ServerView:
    """A copy of the server's uploads and datasets, safe to read from any thread."""

    uploads: tuple[UploadRecord, ...]
    datasets: tuple[DatasetRecord, ...]

    def of(self, user_id: str) -> list[UploadRecord]:
        """The uploads whose main author is ``user_id``."""
        return [u for u in self.uploads if u.main_author == user_id]


def view(server: LocalServer) -> ServerView:
    """Copy the server's state (call on the server's event loop thread)."""
    state = server.state
    return ServerView(
        uploads=tuple(copy.deepcopy(state.uploads())),
        datasets=tuple(copy.deepcopy(state.datasets())),
    )


def read_manifest(path: Path) -> dict[str, Any]:
    """Load a ``PIDs.json``."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def label_of(upload_name: str | None) -> str:
    """The readable part of an engine-made upload name (the group's label)."""
    match = _NAME.match(upload_name or "")
    if match is None:
        raise AssertionError(f"{upload_name!r} is not an upload name the engine makes")
    return match.group("label")


@dataclass(slots=True)
class Audit:
    """Every broken promise found; empty lists mean the run kept all of them."""

    duplicates: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    wrongly_published: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing was found."""
        return not (self.duplicates or self.orphans or self.wrongly_published or self.mismatches)

    def assert_clean(self) -> None:
        """Fail with every finding listed."""
        assert self.clean, (
            f"duplicates={self.duplicates}\norphans={self.orphans}\n"
            f"wrongly published={self.wrongly_published}\nmismatches=" + "\n".join(self.mismatches)
        )


def _failed_entries(upload: UploadRecord) -> list[str]:
    return [e.mainfile for e in upload.entries if e.process_status != "SUCCESS"]


def audit(
    state: ServerView,
    manifest: Mapping[str, Any],
    *,
    user_id: str = TEST1,
    publish: bool,
    dataset_name: str | None = None,
    comment: str | None = None,
    coauthors: Sequence[str] = (),
) -> Audit:
    """Compare a manifest with the server; see the module docstring."""
    found = Audit()
    mine = {u.upload_id: u for u in state.of(user_id)}
    names = Counter(u.upload_name for u in mine.values())
    found.duplicates = sorted(str(n) for n, c in names.items() if c > 1)
    for upload in mine.values():
        if upload.published and (upload.process_status != "SUCCESS" or _failed_entries(upload)):
            found.wrongly_published.append(f"{upload.upload_name} ({upload.upload_id})")
    dataset_ids = [
        d.dataset_id
        for d in state.datasets
        if d.dataset_name == dataset_name and d.user_id == user_id
    ]
    if dataset_name is not None and len(dataset_ids) > 1:
        found.duplicates.append(f"dataset {dataset_name!r} x{len(dataset_ids)}")
    if manifest.get("dataset_id") and dataset_ids and manifest["dataset_id"] not in dataset_ids:
        found.mismatches.append(f"manifest dataset {manifest['dataset_id']} is not {dataset_ids}")
    referenced: set[str] = set()
    items: Mapping[str, Mapping[str, Any]] = manifest["items"]
    for key, item in items.items():
        upload_id = item.get("upload_id")
        if upload_id:
            referenced.add(upload_id)
        status = item["status"]
        if status in ("published", "done"):
            found.mismatches.extend(
                _check_good(
                    key, item, mine.get(upload_id or ""), publish, dataset_ids, comment, coauthors
                )
            )
        elif status == "failed":
            if not item.get("message"):
                found.mismatches.append(f"{key}: failed without a message")
            kept = mine.get(upload_id or "")
            if kept is not None and kept.published:
                found.wrongly_published.append(f"{key}: failed but published ({upload_id})")
        elif status == "skipped":
            if upload_id:
                found.mismatches.append(f"{key}: skipped but has upload {upload_id}")
    for key, ids in (manifest.get("upload_ids") or {}).items():
        if items.get(key, {}).get("upload_id") != ids:
            found.mismatches.append(f"{key}: upload_ids says {ids}, items disagree")
    for key, ids in (manifest.get("entry_ids") or {}).items():
        if list(items.get(key, {}).get("entry_ids") or []) != list(ids):
            found.mismatches.append(f"{key}: entry_ids says {ids}, items disagree")
    found.orphans = sorted(
        f"{u.upload_name} ({u.upload_id})" for u in mine.values() if u.upload_id not in referenced
    )
    return found


def _check_good(
    key: str,
    item: Mapping[str, Any],
    upload: UploadRecord | None,
    publish: bool,
    dataset_ids: Sequence[str],
    comment: str | None,
    coauthors: Sequence[str],
) -> list[str]:
    problems: list[str] = []
    if upload is None:
        return [f"{key}: manifest names upload {item.get('upload_id')}, the server has none"]
    if upload.upload_name != item.get("upload_name"):
        problems.append(f"{key}: name {item.get('upload_name')!r} != {upload.upload_name!r}")
    if upload.process_running or upload.process_status != "SUCCESS":
        problems.append(f"{key}: server status {upload.process_status}")
    want_published = item["status"] == "published"
    if want_published != upload.published or (publish and not upload.published):
        problems.append(f"{key}: manifest {item['status']}, server published={upload.published}")
    mainfiles = set(item.get("mainfiles") or ())
    entries = [e for e in upload.entries if e.mainfile in mainfiles]
    if {e.mainfile for e in entries} != mainfiles or not mainfiles:
        problems.append(f"{key}: entries {sorted(e.mainfile for e in entries)} != {mainfiles}")
    if sorted(e.entry_id for e in entries) != sorted(item.get("entry_ids") or ()):
        problems.append(f"{key}: entry ids differ from the server's")
    for entry in entries:
        if entry.process_status != "SUCCESS":
            problems.append(f"{key}: entry {entry.mainfile} is {entry.process_status}")
        if dataset_ids and not set(entry.datasets) & set(dataset_ids):
            problems.append(f"{key}: entry {entry.mainfile} is not in the dataset")
        if comment is not None and entry.comment != comment:
            problems.append(f"{key}: entry comment {entry.comment!r}")
    if sorted(upload.coauthors) != sorted(coauthors):
        problems.append(f"{key}: coauthors {upload.coauthors} != {list(coauthors)}")
    return problems


def fingerprint(
    state: ServerView, *, user_id: str = TEST1, dataset_names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What a run determines on the server, independent of ids: label → upload facts."""
    names = dict(dataset_names or {d.dataset_id: d.dataset_name for d in state.datasets})
    result: dict[str, Any] = {}
    for upload in state.of(user_id):
        label = label_of(upload.upload_name)
        facts = {
            "published": upload.published,
            "status": upload.process_status,
            "embargo": upload.embargo_length,
            "coauthors": sorted(upload.coauthors),
            "entries": sorted(
                (
                    e.mainfile,
                    e.process_status,
                    tuple(sorted(names.get(d, d) for d in e.datasets)),
                    e.comment,
                    tuple(e.references),
                )
                for e in upload.entries
            ),
        }
        result.setdefault(label, []).append(facts)
    return result


def keys_of(items: Iterable[str]) -> list[str]:
    """Sorted calculation keys (``DFT-10`` after ``DFT-9``)."""
    return sorted(items, key=lambda k: (len(k), k))
