"""Opt-in: the end-to-end run against the real NOMAD 2.0 application (shared/real-nomad).

Runs only when ``NOMAD_BULK_REAL_URL`` names its API, e.g.
``NOMAD_BULK_REAL_URL=http://127.0.0.1:8000/api/v1 pytest -m real_nomad tests/engine``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anyio
import pytest

from nomad_bulk.client import NomadClient
from nomad_bulk.config import Secret, Settings
from nomad_bulk.engine import PollPolicy, RunOptions, run_upload
from nomad_bulk.samples import make_samples

REAL_URL = os.environ.get("NOMAD_BULK_REAL_URL")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.real_nomad,
    pytest.mark.skipif(not REAL_URL, reason="set NOMAD_BULK_REAL_URL to a running real NOMAD"),
]


@pytest.mark.timeout(1200)
async def test_fifty_folders_with_a_dataset_published_on_real_nomad(tmp_path: Path) -> None:
    """50 FHI-aims folders: processed, verified, in a new dataset, published; ids match NOMAD's."""
    assert REAL_URL is not None
    folders = int(os.environ.get("NOMAD_BULK_REAL_FOLDERS", "50"))
    make_samples(tmp_path, folders)
    settings = Settings(url=REAL_URL, username="test1", password=Secret("password"))
    dataset = f"nomad-bulk real check {uuid.uuid4().hex[:8]}"
    options = RunOptions(
        per_upload=os.environ.get("NOMAD_BULK_REAL_PER_UPLOAD", "") == "1",
        max_per_upload=10,
        publish=True,
        dataset=dataset,
        comment="nomad-bulk end-to-end check",
        references=("https://example.org/nomad-bulk",),
        requests_per_second=20.0,
        poll=PollPolicy(initial=0.5, max_wait=5.0),
        processing_timeout=900.0,
    )
    with anyio.fail_after(1100):
        report = await run_upload(tmp_path, settings=settings, options=options)
    assert report.ok, report.summary()
    assert report.counts["published"] == folders
    async with NomadClient(settings) as nomad:
        found = await nomad.find_dataset(dataset)
        assert found is not None and found.dataset_id == report.dataset_id
        for upload_id in sorted(set(report.upload_ids.values())):
            upload = await nomad.get_upload(upload_id)
            assert upload.published
            entries = await nomad.get_entries(upload_id)
            assert all(not e.failed for e in entries)
        sample = report.items[0]
        entry = await nomad.get_entry(sample.entry_ids[0])
        assert entry.upload_id == sample.upload_id and report.dataset_id in entry.dataset_ids
