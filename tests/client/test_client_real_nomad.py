"""The client's integration flow against a real NOMAD 2.0 (opt-in).

Runs only when ``NOMAD_BULK_REAL_URL`` names the API of a running real NOMAD,
e.g. the one from ``shared/real-nomad`` (users ``test1``/``test2``, password
``password``)::

    NOMAD_BULK_REAL_URL=http://127.0.0.1:PORT/api/v1 pytest -m real_nomad tests/client
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from client_helpers import Poll, make_zip

from nomad_bulk.client import NomadClient, RetryPolicy
from nomad_bulk.config import Secret, Settings
from nomad_bulk.errors import (
    AlreadyPublishedError,
    AuthError,
    BadRequestError,
    BusyError,
    NotFoundError,
    ValidationError,
)
from nomad_bulk.models import ProcessStatus

REAL_URL = os.environ.get("NOMAD_BULK_REAL_URL", "")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.real_nomad,
    pytest.mark.skipif(not REAL_URL, reason="set NOMAD_BULK_REAL_URL to a real NOMAD API"),
    pytest.mark.timeout(300),
]

TEST2 = "a03af8b6-3aa7-428a-b3b1-4a6317e576b6"
POLL = Poll(initial_wait=0.2, max_wait=2.0, timeout=180.0)

AIMS_OUT = """\
  MPI-parallelism will be employed.
------------------------------------------------------------
          Invoking FHI-aims ...

  When using FHI-aims, please cite the following reference:

  Volker Blum, Ralf Gehrke, Felix Hanke, Paula Havu,
  Ville Havu, Xinguo Ren, Karsten Reuter, and Matthias Scheffler,
  'Ab Initio Molecular Simulations with Numeric Atom-Centered Orbitals',
  Computer Physics Communications 180, 2175-2196 (2009)

------------------------------------------------------------

  Date     :  20240101, Time     :  120000.000

  FHI-aims created a unique identifier for this run for later identification
  aims_uuid : 00000000-0000-0000-0000-000000000000

  Build configuration of the current instance of FHI-aims
  -------------------------------------------------------
  FHI-aims version      : 240101
  Commit number         : 0000000

  Using        1 parallel tasks.
  Task        0 on host localhost reporting.

  ------------------------------------------------------------
          Leaving FHI-aims.
          Date     :  20240101, Time     :  120001.000

          Have a nice day.
------------------------------------------------------------
"""


def real_settings(username: str = "test1", password: str = "password") -> Settings:
    """Settings for a test user of the real NOMAD."""
    return Settings(url=REAL_URL, username=username, password=Secret(password))


@asynccontextmanager
async def real_client(**changes: object) -> AsyncIterator[NomadClient]:
    """A client for test1 with modest retries."""
    retry = RetryPolicy(max_attempts=3, max_time=30, initial_wait=0.2, max_wait=1, jitter=0.1)
    async with NomadClient(real_settings().with_(**changes), retry=retry) as nomad:
        yield nomad


def calc_archive(tmp_path: Path, folders: int = 1) -> Path:
    """A zip of FHI-aims calculations the real parser recognises."""
    files: dict[str, str | bytes] = {}
    for i in range(folders):
        files[f"calc{i}/aims.out"] = AIMS_OUT
        files[f"calc{i}/control.in"] = "# minimal control.in\nxc pbe\n"
    return make_zip(tmp_path / f"calc-{uuid.uuid4().hex[:8]}.zip", files)


async def test_real_info_and_me() -> None:
    """The real server speaks 2.0 and the login works with POST /auth/token."""
    async with real_client() as nomad:
        info = await nomad.info()
        assert info.api_version == "2.0"
        me = await nomad.me()
        assert me.username == "test1"
        users = await nomad.resolve_users(["test2", me.user_id, "test2@nomad.local"])
        assert users["test2"].user_id == TEST2 == users["test2@nomad.local"].user_id


async def test_real_full_flow(tmp_path: Path) -> None:
    """Upload → process → entries → dataset → edit → publish, on the real NOMAD."""
    name = f"nomad-bulk-{uuid.uuid4().hex[:10]}"
    archive = calc_archive(tmp_path, 2)
    sent: list[int] = []
    async with real_client() as nomad:
        with anyio.fail_after(280):
            upload = await nomad.create_upload(
                archive, upload_name=name, on_progress=lambda s, t: sent.append(s)
            )
            assert sent[-1] == archive.stat().st_size
            upload = await nomad.wait_for_process(upload.upload_id, **POLL)
            assert upload.process_status is ProcessStatus.SUCCESS and upload.entries == 2
            assert [u.upload_id for u in await nomad.find_uploads(name)] == [upload.upload_id]

            entries = await nomad.get_entries(upload.upload_id, page_size=1)
            assert sorted(str(e.mainfile) for e in entries) == ["calc0/aims.out", "calc1/aims.out"]
            assert all(not e.failed for e in entries)

            listing = await nomad.list_raw_directory(upload.upload_id, "calc0")
            mainfile = next(f for f in listing.content if f.name == "aims.out")
            assert mainfile.entry_id in {e.entry_id for e in entries}

            dataset = await nomad.create_dataset(name)
            found = await nomad.find_dataset(name)
            # NOMAD: the create answer has microseconds, stored copies milliseconds (Mongo).
            assert found is not None and found.dataset_id == dataset.dataset_id
            await nomad.edit_upload(
                upload.upload_id,
                upload_name=name + "-edited",
                datasets=[dataset.dataset_id],
                coauthors=["test2"],
                references=["https://example.org/nomad-bulk"],
                comment="edited by nomad-bulk",
            )
            upload = await nomad.wait_for_process(
                upload.upload_id, process="edit_upload_metadata", **POLL
            )
            assert upload.upload_name == name + "-edited" and TEST2 in upload.coauthors
            entry = await nomad.get_entry(entries[0].entry_id)
            assert entry.comment == "edited by nomad-bulk"
            assert dataset.dataset_id in entry.dataset_ids

            hits = await nomad.query_entries({"upload_id": upload.upload_id}, page_size=1)
            assert {e.entry_id for e in hits} == {e.entry_id for e in entries}

            raw = await nomad.download_entry_raw(entries[0].entry_id, tmp_path)
            with zipfile.ZipFile(raw) as zipped:
                assert any(n.endswith("aims.out") for n in zipped.namelist())
            doc = await nomad.download_entry_archive(entries[0].entry_id, tmp_path)
            assert json.loads(doc.read_text())

            await nomad.publish_upload(upload.upload_id)
            upload = await nomad.wait_published(upload.upload_id, **POLL)
            assert upload.published
            with pytest.raises(AlreadyPublishedError):
                await nomad.publish_upload(upload.upload_id)


async def test_real_delete_and_errors(tmp_path: Path) -> None:
    """Delete waits until 404; NOMAD's refusals map to the right error classes."""
    archive = calc_archive(tmp_path)
    async with real_client() as nomad:
        with anyio.fail_after(200):
            upload = await nomad.create_upload(archive)
            try:
                busy: list[int | None] = []
                try:  # NOMAD: 2.0 refuses edits while processing
                    await nomad.edit_upload(upload.upload_id, comment="too early")
                except BusyError as exc:
                    busy.append(exc.status)
                # Either refused as busy, or processing was already over.
                assert busy == [400] or not (await nomad.get_upload(upload.upload_id)).failed
                await nomad.wait_for_process(upload.upload_id, **POLL)
                with pytest.raises(ValidationError) as caught:
                    await nomad.edit_upload(upload.upload_id, coauthors=["nobody@nowhere.example"])
                assert caught.value.status == 422 and caught.value.errors
                with pytest.raises(BadRequestError):
                    await nomad.create_upload(archive, embargo_length=40)
            finally:
                await nomad.delete_upload(upload.upload_id, timeout=120)
            with pytest.raises(NotFoundError):
                await nomad.get_upload(upload.upload_id)
            with pytest.raises(NotFoundError):
                await nomad.get_dataset("doesnotexist0000000000")
            with pytest.raises(NotFoundError):  # NOMAD: 422 "No matching upload found"
                await nomad.edit_upload(upload.upload_id, comment="gone")


async def test_real_pagination_and_counts(tmp_path: Path) -> None:
    """Uploads are paged with page_after_value; counts use page_size=0."""
    archive = calc_archive(tmp_path)
    async with real_client() as nomad:
        with anyio.fail_after(200):
            made = [await nomad.create_upload(archive) for _ in range(3)]
            try:
                ids = {u.upload_id for u in made}
                paged = await nomad.list_uploads(page_size=1)
                assert ids <= {u.upload_id for u in paged}
                assert await nomad.count_uploads() == len(paged)
                assert await nomad.count_uploads(upload_id=[u.upload_id for u in made]) == 3
            finally:
                for upload in made:
                    await nomad.wait_for_process(upload.upload_id, raise_on_failure=False, **POLL)
                    await nomad.delete_upload(upload.upload_id, timeout=120)


async def test_real_tokens() -> None:
    """Bad passwords are AuthError; an app token authenticates on its own."""
    async with NomadClient(real_settings(password="wrong")) as nomad:
        with pytest.raises(AuthError):
            await nomad.me()
    async with real_client() as nomad:
        token = await nomad.create_app_token(3600)
    async with NomadClient(Settings(url=REAL_URL, token=token)) as nomad:
        assert (await nomad.me()).username == "test1"
    async with real_client(app_token_lifetime=86400) as nomad:
        assert (await nomad.me()).username == "test1"
