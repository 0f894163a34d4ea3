"""The NOMAD tutorial's own code, run through ``nomad_bulk.compat`` against the local server.

The code blocks below are copied character for character from the tutorial (part 2,
"Using NOMAD's API for Project Management", in the order a notebook runs them) and
executed in one shared namespace, as in the tutorial's single Jupyter session.
What the test changes, and nothing else:

1. ``IMPORT_CHANGES``: the import lines name ``nomad_bulk.compat`` instead of
   ``nomad_utility_workflows.utils.uploads`` / ``.entries`` / ``.datasets``.
2. ``ENTRY_LIST``: the two ``entries = [...]`` lines name three entries published on
   nomad-lab.eu, which tests never reach; they name three FHI-aims entries the test
   publishes on the local server first.

The rest runs as written, ``url='test'`` and ``url='prod'`` included: the fixtures point
those aliases at the local server with ``compat.redirect_deployment``, write the ``.env``
the tutorial asks for, and put Part 1's ``PIDs.json`` in a folder literally named
``<path to PIDs>``. ``time.sleep`` is made to fail: compat's calls return when NOMAD's
process is done, so every polling loop succeeds at its first check.
"""
# ruff: noqa: E501  (the tutorial's lines are kept as they are)

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from nomad_bulk import compat
from nomad_bulk.config import Secret, Settings
from nomad_bulk.samples import make_samples
from nomad_bulk.server import LocalServer
from nomad_bulk.sync import NomadClient

USER1 = "68878af7-6845-46c0-b2c1-250d4d8eb470"

IMPORT_CHANGES = {
    "from nomad_utility_workflows.utils.uploads import": "from nomad_bulk.compat import",
    "from nomad_utility_workflows.utils.entries import": "from nomad_bulk.compat import",
    "from nomad_utility_workflows.utils.datasets import": "from nomad_bulk.compat import",
}
TUTORIAL_ENTRIES = "entries = ['0iCl0nWwCftF0tgQOaklcQLFB68E', '24Q4MoaAUtsWN7Hepw3UH3TU93pX', '6V_q8X39he-dakYHifH_3Z53GTdZ']"

# ---- the tutorial's code blocks, verbatim ----------------------------------------------

BASICS_IMPORTS = """\
from dotenv import load_dotenv
load_dotenv()
import os
import zipfile
from pprint import pprint
from nomad_utility_workflows.utils.uploads import (
    upload_files_to_nomad,
    get_upload_by_id,
    delete_upload
)

def create_zip(zip_name, dir_name):
    with zipfile.ZipFile(zip_name, 'w', zipfile.ZIP_DEFLATED) as zipf:
        for root, dirs, files in os.walk(dir_name):
            for file in files:
                zipf.write(os.path.join(root, file), os.path.relpath(os.path.join(root, file), dir_name))
"""

BASICS_ZIP = """\
os.makedirs('Test/', exist_ok=True)
create_zip('test.zip', 'Test/')
test_upload_fnm = './test.zip'
print(f'Zip Created: {os.path.isfile(test_upload_fnm)}')
"""

BASICS_UPLOAD = """\
upload_id = upload_files_to_nomad(filename=test_upload_fnm, url='test')
print(upload_id)
"""

BASICS_STATUS = """\
nomad_upload = get_upload_by_id(upload_id, url='test')
pprint(nomad_upload)
"""

BASICS_DELETE = """\
delete_upload(upload_id, url='test')
"""

BASICS_CHECK_DELETED = """\
try:
    get_upload_by_id(upload_id, url='test')
except Exception:
    print(f'Upload with upload_id={upload_id} was deleted successfully.')
"""

PART2_IMPORTS = """\
from dotenv import load_dotenv
load_dotenv()
import os
import time
import json
from nomad_utility_workflows.utils.entries import download_entry_by_id
from nomad_utility_workflows.utils.uploads import (
    upload_files_to_nomad,
    get_upload_by_id,
    edit_upload_metadata,
    publish_upload
)
from nomad_utility_workflows.utils.entries import get_entries_of_upload
from nomad_utility_workflows.utils.datasets import create_dataset
"""

PART2_DOWNLOAD = """\
entries = ['0iCl0nWwCftF0tgQOaklcQLFB68E', '24Q4MoaAUtsWN7Hepw3UH3TU93pX', '6V_q8X39he-dakYHifH_3Z53GTdZ']
responses = []
for i_entry, entry in enumerate(entries):
    folder_nm = f'DFT-{i_entry+1}'
    os.makedirs(f'{folder_nm}', exist_ok=True)
    responses.append(download_entry_by_id(entry, url='prod', zip_file_name=os.path.join(folder_nm, f'{entry}.zip')))
"""

PART2_UPLOAD_WITH_CHECKS = """\
entries = ['0iCl0nWwCftF0tgQOaklcQLFB68E', '24Q4MoaAUtsWN7Hepw3UH3TU93pX', '6V_q8X39he-dakYHifH_3Z53GTdZ']
dft_upload_ids = []
responses = []

# define the timing parameters
max_wait_time = 60  # 60 seconds
interval = 5  # 5 seconds

for i_entry, entry in enumerate(entries):
    fnm = os.path.join(os.getcwd(), f'DFT-{i_entry+1}' ,f'{entry}.zip')
    # make the upload
    upload_id = upload_files_to_nomad(filename=fnm, url='test')
    dft_upload_ids.append(upload_id)

    # wait until the upload is processed successfully before continuing
    elapsed_time = 0
    while elapsed_time < max_wait_time:
        nomad_upload = get_upload_by_id(upload_id, url='test')

        # Check if the upload is complete
        if nomad_upload.process_status == 'SUCCESS':
            responses.append(nomad_upload)
            break

        # Wait the specified interval before the next call
        time.sleep(interval)
        elapsed_time += interval
    else:
        raise TimeoutError(f'Maximum wait time of {max_wait_time/60.} minutes exceeded. Upload with id {upload_id} is not complete.')

print(dft_upload_ids)
"""

PART2_ENTRY_IDS = """\
dft_entry_ids = []
for upload in dft_upload_ids:
    entries = get_entries_of_upload(upload, url='test', with_authentication=True)
    assert len(entries) == 1
    dft_entry_ids.append(entries[0].entry_id)
print(dft_entry_ids)
"""

PART2_CREATE_DATASET = """\
dataset_id = create_dataset('Example Dataset - DPG Tutorial 2025 - <your_name>', url='test')
print(dataset_id)
"""

PART2_METADATA_EXAMPLE = """\
metadata = {
    "metadata": {
    "upload_name": '<new_upload_name>',
    "references": ["https://doi.org/xx.xxxx/xxxxxx"],
    "datasets": '<dataset_id>',
    "embargo_length": 0,
    "coauthors": ["coauthor@affiliation.de"],
    "comment": 'This is a test upload...'
    },
}
"""

PART2_EDIT_METADATA = """\
# dft_upload_ids - should be previously defined in your notebook
# dataset_id - should be previously defined in your notebook
responses = []

# define the timing parameters
max_wait_time = 30  # 30 seconds
interval = 5  # 5 seconds

for i_upload, upload in enumerate(dft_upload_ids):
    metadata_new = {'upload_name': f'Test Upload - DFT-{i_upload}', 'datasets': dataset_id}
    edit_upload_metadata(upload, url='test', upload_metadata=metadata_new)

    # wait until the upload is processed successfully before continuing
    elapsed_time = 0
    while elapsed_time < max_wait_time:
        nomad_upload = get_upload_by_id(upload, url='test')

        # Check if the edit upload is complete
        if nomad_upload.process_status == 'SUCCESS':
            responses.append(nomad_upload)
            break

        # Wait the specified interval before the next call
        time.sleep(interval)
        elapsed_time += interval
    else:
        raise TimeoutError(f'Maximum wait time of {max_wait_time/60.} minutes exceeded. Edit Upload with id {upload} is not complete.')
"""

PART2_MD_TO_DATASET = """\
with open(os.path.join('<path to PIDs>', 'PIDs.json')) as f:
    pids_dict = json.load(f)

md_upload_id = pids_dict.get('upload_ids').get('md')
metadata_new = {'upload_name': f'Test Upload - MD-equilibration', 'datasets': dataset_id}
edit_upload_metadata(md_upload_id, url='test', upload_metadata=metadata_new)
"""

PART2_MD_CHECK = """\
nomad_upload = get_upload_by_id(md_upload_id, url='test')

print(nomad_upload.process_status == 'SUCCESS')
print(nomad_upload.process_running is False)
"""

PART2_PUBLISH = """\
all_upload_ids = [*dft_upload_ids, md_upload_id]
responses = []

# define the timing parameters
max_wait_time = 30  # 30 seconds
interval = 5  # 5 seconds

for upload in all_upload_ids:
    published_upload = publish_upload(upload, url='test')

    # wait until the upload is processed successfully before continuing
    elapsed_time = 0
    while elapsed_time < max_wait_time:
        nomad_upload = get_upload_by_id(upload, url='test')

        # Check if the edit upload is complete
        if nomad_upload.process_status == 'SUCCESS':
            responses.append(nomad_upload)
            break

        # Wait the specified interval before the next call
        time.sleep(interval)
        elapsed_time += interval
    else:
        raise TimeoutError(f'Maximum wait time of {max_wait_time/60.} minutes exceeded. Publish Upload with id {upload} is not complete.')
"""

# ---- running them ----------------------------------------------------------------------


class Session:
    """One 'notebook session': blocks run in order in a shared namespace."""

    def __init__(self, folder: Path, entry_list: str | None = None) -> None:
        self.folder = folder
        self.namespace: dict[str, Any] = {"__name__": "__tutorial__"}
        self.entry_list = entry_list
        self.cells = 0

    def run(self, block: str) -> None:
        """Apply the documented changes, then execute the block as a notebook cell would."""
        code = block
        for old, new in IMPORT_CHANGES.items():
            code = code.replace(old, new)
        if TUTORIAL_ENTRIES in code:
            assert self.entry_list is not None, "this session has no replacement entry list"
            code = code.replace(TUTORIAL_ENTRIES, self.entry_list)
        assert "nomad_utility_workflows" not in code
        self.cells += 1
        # A real file name, so that load_dotenv() looks for .env next to it, in the
        # tutorial's working directory, as it does from a notebook.
        path = self.folder / f"cell_{self.cells:02d}.py"
        path.write_text(code, encoding="utf-8")
        exec(compile(code, str(path), "exec"), self.namespace)  # noqa: S102

    def __getitem__(self, name: str) -> Any:
        return self.namespace[name]


@pytest.fixture
def tutorial(server: LocalServer, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tutorial's working directory: its ``.env``, and the aliases pointing at the server."""
    (clean_env / ".env").write_text('NOMAD_USERNAME="test1"\nNOMAD_PASSWORD="password"\n')
    compat.redirect_deployment("test", server.url)
    compat.redirect_deployment("prod", server.url)

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"the tutorial's polling loop had to sleep {seconds} s")

    monkeypatch.setattr(time, "sleep", no_sleep)
    return clean_env


def test_tutorial_api_basics_run_unchanged_but_for_the_imports(
    tutorial: Path, server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tutorial's 'Uploading API Basics' (upload an empty zip, check it, delete it) works as written."""
    session = Session(tutorial)
    for block in (BASICS_IMPORTS, BASICS_ZIP, BASICS_UPLOAD, BASICS_STATUS):
        session.run(block)
    upload_id = session["upload_id"]
    shown = capsys.readouterr().out
    assert "Zip Created: True" in shown
    assert upload_id in shown
    assert "process_status='SUCCESS'" in shown and "NomadUpload(upload_id=" in shown
    assert session["nomad_upload"].process_running is False
    assert [u.upload_id for u in server.state.uploads()] == [upload_id]
    assert server.state.uploads()[0].main_author == USER1

    session.run(BASICS_DELETE)
    session.run(BASICS_CHECK_DELETED)
    shown = capsys.readouterr().out
    assert f"Upload with upload_id={upload_id} was deleted successfully." in shown
    assert server.state.uploads() == []


def _publish_prod_like_entries(server: LocalServer, folder: Path) -> list[str]:
    """Stand-ins for the tutorial's three public water calculations: published by test2."""
    settings = Settings(url=server.url, username="test2", password=Secret("password"))
    entry_ids = []
    with NomadClient(settings) as nomad:
        for calc in make_samples(folder, 3, layout="ready-zip"):
            upload = nomad.create_upload(next(calc.glob("*.zip")))
            nomad.wait_for_process(upload.upload_id, initial_wait=0.01)
            nomad.publish_upload(upload.upload_id)
            nomad.wait_published(upload.upload_id, initial_wait=0.01)
            (entry,) = nomad.get_entries(upload.upload_id)
            entry_ids.append(entry.entry_id)
    return entry_ids


def _part_one_md_upload(server: LocalServer, folder: Path) -> str:
    """Part 1's drag-and-drop MD upload of test1, and the PIDs.json that records it."""
    (calc,) = make_samples(folder / "md", 1, code="vasp", prefix="MD-")
    archive = folder / "md.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(calc.iterdir()):
            zf.write(file, f"{calc.name}/{file.name}")
    settings = Settings(url=server.url, username="test1", password=Secret("password"))
    with NomadClient(settings) as nomad:
        upload = nomad.create_upload(archive)
        nomad.wait_for_process(upload.upload_id, initial_wait=0.01)
    pids = folder / "<path to PIDs>"
    pids.mkdir()
    (pids / "PIDs.json").write_text(
        json.dumps({"upload_ids": {"md": upload.upload_id, "DFT": []}, "dataset_id": ""})
    )
    return upload.upload_id


@pytest.mark.parametrize("server", ["1.3", "2.0"], indirect=True)
def test_tutorial_part2_flow_runs_unchanged_but_for_imports_and_entry_ids(
    tutorial: Path, server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tutorial's whole part-2 flow works as written: download, upload with checks,
    entry ids, dataset, metadata, the MD upload, publish; the server ends in the state
    the tutorial describes."""
    prod_entries = _publish_prod_like_entries(server, tutorial.parent / "prod")
    md_upload_id = _part_one_md_upload(server, tutorial)
    session = Session(tutorial, entry_list=f"entries = {prod_entries!r}")

    session.run(PART2_IMPORTS)
    session.run(PART2_DOWNLOAD)
    for n, entry_id in enumerate(prod_entries, start=1):
        rebuilt = tutorial / f"DFT-{n}" / f"{entry_id}.zip"
        assert any(name.endswith("/aims.out") for name in zipfile.ZipFile(rebuilt).namelist())
    assert all("metadata" in archive for archive in session["responses"])

    session.run(PART2_UPLOAD_WITH_CHECKS)
    dft_upload_ids = session["dft_upload_ids"]
    assert len(dft_upload_ids) == 3
    assert [r.process_status for r in session["responses"]] == ["SUCCESS"] * 3

    session.run(PART2_ENTRY_IDS)
    dft_entry_ids = session["dft_entry_ids"]
    assert len(dft_entry_ids) == 3 and len(set(dft_entry_ids)) == 3

    session.run(PART2_CREATE_DATASET)
    dataset_id = session["dataset_id"]
    session.run(PART2_METADATA_EXAMPLE)
    session.run(PART2_EDIT_METADATA)
    session.run(PART2_MD_TO_DATASET)
    capsys.readouterr()
    session.run(PART2_MD_CHECK)
    assert capsys.readouterr().out == "True\nTrue\n"
    assert session["md_upload_id"] == md_upload_id

    session.run(PART2_PUBLISH)
    assert len(session["responses"]) == 4
    assert all(r.published and r.process_status == "SUCCESS" for r in session["responses"])

    # The server's own view: four published uploads of test1, named, all in the dataset.
    mine = {u.upload_id: u for u in server.state.uploads() if u.main_author == USER1}
    assert set(mine) == {*dft_upload_ids, md_upload_id}
    assert all(u.published for u in mine.values())
    assert [mine[u].upload_name for u in dft_upload_ids] == [
        f"Test Upload - DFT-{i}" for i in range(3)
    ]
    assert mine[md_upload_id].upload_name == "Test Upload - MD-equilibration"
    in_dataset = [e.entry_id for u in mine.values() for e in u.entries if dataset_id in e.datasets]
    assert set(dft_entry_ids) <= set(in_dataset) and len(in_dataset) == 4
    (dataset,) = [d for d in server.state.datasets() if d.dataset_id == dataset_id]
    assert dataset.dataset_name == "Example Dataset - DPG Tutorial 2025 - <your_name>"
    assert dataset.user_id == USER1
