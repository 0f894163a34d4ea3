"""The tutorial-compatible functions beyond the tutorial's own flow."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

from nomad_bulk import compat
from nomad_bulk.errors import AuthError, ConfigError, NotFoundError
from nomad_bulk.samples import make_samples
from nomad_bulk.server import LocalServer, ServerConfig
from nomad_bulk.sync import running_server

USER1 = "68878af7-6845-46c0-b2c1-250d4d8eb470"
COAUTHOR1 = "coauthor1@example.org"


def _zip_of(folders: list[Path], target: Path) -> Path:
    """One zip with each calculation folder as its own directory."""
    with zipfile.ZipFile(target, "w") as zf:
        for folder in folders:
            for file in sorted(folder.iterdir()):
                zf.write(file, f"{folder.name}/{file.name}")
    return target


@pytest.fixture
def calc_zip(tmp_path: Path) -> Path:
    """One calculation (an FHI-aims run) in a zip."""
    return _zip_of(make_samples(tmp_path / "one", 1), tmp_path / "one.zip")


# -- the tutorial package's names and arguments ---------------------------------------------

TUTORIAL_SIGNATURES = {
    # name: the parameters of nomad_utility_workflows' function, in order
    "upload_files_to_nomad": ["filename", "url", "timeout_in_sec"],
    "get_upload_by_id": ["upload_id", "url", "timeout_in_sec"],
    "get_all_my_uploads": ["url", "timeout_in_sec"],
    "delete_upload": ["upload_id", "url", "timeout_in_sec"],
    "edit_upload_metadata": ["upload_id", "upload_metadata", "url", "timeout_in_sec"],
    "publish_upload": ["upload_id", "url", "timeout_in_sec"],
    "get_entries_of_upload": ["upload_id", "url", "with_authentication", "timeout_in_sec"],
    "get_entries_of_my_uploads": ["url", "timeout_in_sec"],
    "get_entry_by_id": ["entry_id", "url", "with_authentication", "timeout_in_sec"],
    "query_entries": ["query_params", "url"],
    "download_entry_by_id": [
        "entry_id",
        "url",
        "timeout_in_sec",
        "with_authentication",
        "zip_file_name",
    ],
    "download_entry_raw_data_by_id": [
        "entry_id",
        "url",
        "timeout_in_sec",
        "with_authentication",
        "zip_file_name",
    ],
    "create_dataset": ["dataset_name", "url", "timeout_in_sec"],
    "delete_dataset": ["dataset_id", "url", "timeout_in_sec"],
    "get_dataset_by_id": ["dataset_id", "url"],
    "retrieve_datasets": ["dataset_params", "url"],
    "who_am_i": ["url", "timeout_in_sec"],
    "get_user_by_id": ["user_id", "url", "timeout_in_sec"],
    "search_users_by_name": ["user_name", "url", "timeout_in_sec"],
}


def test_functions_take_the_tutorial_packages_arguments_in_order() -> None:
    """Every function accepts the tutorial package's positional parameters, with url=None."""
    for name, expected in TUTORIAL_SIGNATURES.items():
        params = inspect.signature(getattr(compat, name)).parameters.values()
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == expected, name
        assert inspect.signature(getattr(compat, name)).parameters["url"].default is None


def test_public_names_are_pinned() -> None:
    """compat's __all__ is sorted and lists exactly its public functions and classes."""
    public = sorted(
        name
        for name, value in vars(compat).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == compat.__name__
    )
    assert compat.__all__ == sorted(compat.__all__) == public


# -- settings: url, credentials, .env -------------------------------------------------------


def test_url_none_means_nomad_url_and_credentials_come_from_dotenv_at_call_time(
    server: LocalServer, clean_env: Path
) -> None:
    """With url=None the .env of the working directory is read when the call is made."""
    (clean_env / ".env").write_text(
        f"NOMAD_URL={server.url}\nNOMAD_USERNAME=test1\nNOMAD_PASSWORD=password\n"
    )
    assert compat.who_am_i().user_id == USER1
    (clean_env / ".env").write_text(
        f"NOMAD_URL={server.url}\nNOMAD_USERNAME=test2\nNOMAD_PASSWORD=password\n"
    )
    assert compat.who_am_i().username == "test2"
    assert "NOMAD_USERNAME" not in os.environ  # read, never written into the environment


def test_one_login_and_connection_pool_serve_many_calls(as_test1: LocalServer) -> None:
    """Calls with the same deployment and account reuse one client: one login in all."""
    for _ in range(5):
        compat.who_am_i()
        compat.get_all_my_uploads()
    assert as_test1.state.route_counts["POST /auth/token"] == 1
    compat.close()
    compat.who_am_i()
    assert as_test1.state.route_counts["POST /auth/token"] == 2


def test_redirect_deployment_points_an_alias_at_another_url(as_test1: LocalServer) -> None:
    """url='test' reaches the local server only while it is redirected there."""
    compat.redirect_deployment("test", as_test1.url)
    assert compat.who_am_i(url="test").user_id == USER1
    with pytest.raises(ConfigError, match="alias"):
        compat.redirect_deployment("elsewhere", as_test1.url)
    with pytest.raises(ConfigError):
        compat.redirect_deployment("test", "ftp://not-an-api")


def test_errors_are_typed_and_bad_arguments_send_nothing(
    as_test1: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NOMAD's refusals are nomad-bulk exceptions; argument mistakes fail before any request."""
    with pytest.raises(NotFoundError):
        compat.get_upload_by_id("no-such-upload-id-000000")
    with pytest.raises(NotFoundError):
        compat.get_dataset_by_id("no-such-dataset")
    before = as_test1.state.request_count
    with pytest.raises(ConfigError, match="unknown upload metadata key 'title'"):
        compat.edit_upload_metadata("some-upload", upload_metadata={"title": "x"})
    with pytest.raises(ConfigError, match="unknown query key"):
        compat.query_entries({"formula": "H2O"})
    with pytest.raises(ConfigError, match="neither"):
        compat.who_am_i(url="ftp://example.org")
    assert as_test1.state.request_count == before
    monkeypatch.setenv("NOMAD_PASSWORD", "wrong")
    with pytest.raises(AuthError) as refused:
        compat.who_am_i()
    assert "wrong" not in str(refused.value)


# -- uploads, entries, metadata ---------------------------------------------------------------


def test_entries_of_an_upload_are_complete_beyond_the_first_page(
    as_test1: LocalServer, tmp_path: Path
) -> None:
    """25 calculations in one upload: all 25 entries come back (NOMAD's page is 10)."""
    archive = _zip_of(make_samples(tmp_path / "many", 25), tmp_path / "many.zip")
    upload_id = compat.upload_files_to_nomad(archive)
    entries = compat.get_entries_of_upload(upload_id, with_authentication=True)
    (record,) = as_test1.state.uploads()
    assert len(entries) == 25 == len(record.entries)
    assert {e.entry_id for e in entries} == {e.entry_id for e in record.entries}
    assert all(e.upload_id == upload_id and e.processed for e in entries)


def test_upload_returns_after_processing_unless_told_not_to_wait(
    calc_zip: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """upload_files_to_nomad waits for processing by default; wait=False returns at once."""
    with running_server(ServerConfig(processing_time=60.0)) as srv:
        monkeypatch.setenv("NOMAD_URL", srv.url)
        monkeypatch.setenv("NOMAD_USERNAME", "test1")
        monkeypatch.setenv("NOMAD_PASSWORD", "password")
        try:
            upload_id = compat.upload_files_to_nomad(calc_zip, wait=False)
            upload = compat.get_upload_by_id(upload_id)
        finally:
            compat.close()
    assert upload.process_running is True and upload.process_status != "SUCCESS"


def test_a_processing_failure_is_reported_in_the_upload_not_raised(
    as_test1: LocalServer, tmp_path: Path
) -> None:
    """As in the tutorial, a failed processing shows in process_status and errors."""
    broken = make_samples(tmp_path / "broken", 1, fail_upload=[1])
    upload_id = compat.upload_files_to_nomad(_zip_of(broken, tmp_path / "broken.zip"))
    upload = compat.get_upload_by_id(upload_id)
    assert upload.process_status == "FAILURE" and upload.process_running is False
    assert upload.errors and all(isinstance(e, str) for e in upload.errors)
    assert as_test1.state.uploads()[0].process_status == "FAILURE"


def test_edit_metadata_accepts_the_tutorials_keys(as_test1: LocalServer, calc_zip: Path) -> None:
    """dataset_id, coauthor e-mails, references, comment and the nested 'metadata' form apply."""
    upload_id = compat.upload_files_to_nomad(calc_zip)
    dataset_id = compat.create_dataset("compat dataset")
    answer = compat.edit_upload_metadata(
        upload_id,
        upload_metadata={
            "upload_name": "edited",
            "dataset_id": dataset_id,
            "coauthors": [COAUTHOR1],
            "references": ["https://doi.org/10.0000/example"],
            "comment": "compat edit",
        },
    )
    assert answer["upload_id"] == upload_id
    assert answer["data"]["upload_name"] == "edited"
    compat.edit_upload_metadata(upload_id, upload_metadata={"metadata": {"embargo_length": 3}})
    (record,) = as_test1.state.uploads()
    coauthor = as_test1.state.resolve_user_ref(COAUTHOR1)
    assert coauthor is not None
    assert record.upload_name == "edited" and record.coauthors == [coauthor.user_id]
    assert record.embargo_length == 3
    (entry,) = record.entries
    assert entry.datasets == [dataset_id] and entry.comment == "compat edit"
    assert entry.references == ["https://doi.org/10.0000/example"]
    upload = compat.get_upload_by_id(upload_id)
    assert upload.coauthors == [coauthor.user_id]
    assert upload.main_author is not None and upload.main_author.name == "Test One"
    assert upload.nomad_gui_url.endswith(f"/gui/user/uploads/upload/id/{upload_id}")


def test_publish_and_delete_return_when_nomad_is_done(
    as_test1: LocalServer, calc_zip: Path, tmp_path: Path
) -> None:
    """publish_upload returns a published upload; delete_upload returns once it is gone."""
    published = compat.upload_files_to_nomad(calc_zip)
    answer = compat.publish_upload(published)
    assert answer["data"]["published"] is True
    other = _zip_of(make_samples(tmp_path / "two", 1, start=2), tmp_path / "two.zip")
    doomed = compat.upload_files_to_nomad(other)
    last = compat.delete_upload(doomed)
    assert last.upload_id == doomed
    assert [u.upload_id for u in as_test1.state.uploads()] == [published]
    assert [u.upload_id for u in compat.get_all_my_uploads()] == [published]


def test_entry_functions_download_query_and_read(
    as_test1: LocalServer, calc_zip: Path, clean_env: Path
) -> None:
    """get_entry_by_id, query_entries and both downloads find the uploaded entry."""
    upload_id = compat.upload_files_to_nomad(calc_zip)
    dataset_id = compat.create_dataset("query me")
    compat.edit_upload_metadata(upload_id, upload_metadata={"datasets": dataset_id})
    (entry,) = compat.get_entries_of_upload(upload_id)
    assert compat.get_entry_by_id(entry.entry_id).mainfile == entry.mainfile
    by_dataset = compat.query_entries({"dataset_id": dataset_id})
    assert [e.entry_id for e in by_dataset] == [entry.entry_id]
    assert [d.dataset_id for d in by_dataset[0].datasets] == [dataset_id]
    archive = compat.download_entry_by_id(entry.entry_id, zip_file_name="raw.zip")
    assert isinstance(archive, dict) and archive
    names = zipfile.ZipFile(clean_env / "raw.zip").namelist()
    assert any(name.endswith("aims.out") for name in names)
    raw = compat.download_entry_raw_data_by_id(entry.entry_id)
    assert raw == (clean_env / "raw.zip").read_bytes()
    assert [e.entry_id for e in compat.get_entries_of_my_uploads()] == [entry.entry_id]


def test_dataset_and_user_functions(as_test1: LocalServer) -> None:
    """Datasets are created, found by id, name and prefix, and deleted; users are looked up."""
    dataset_id = compat.create_dataset("Example Dataset - compat")
    found = compat.get_dataset_by_id(dataset_id)
    assert found.dataset_name == "Example Dataset - compat"
    assert found.user is not None and found.user.user_id == USER1
    assert [d.dataset_id for d in compat.retrieve_datasets({"dataset_id": dataset_id})] == [
        dataset_id
    ]
    by_name = compat.retrieve_datasets({"dataset_name": "Example Dataset - compat"})
    assert [d.dataset_id for d in by_name] == [dataset_id]
    assert compat.retrieve_datasets({"prefix": "example dataset", "max_datasets": 0}) == []
    compat.delete_dataset(dataset_id)
    assert as_test1.state.datasets() == []
    with pytest.raises(NotFoundError):
        compat.delete_dataset(dataset_id)

    me = compat.who_am_i()
    assert me.user_id == USER1 and me.email == "test1@example.org"
    assert compat.get_user_by_id(USER1).name == "Test One"
    coauthors = compat.search_users_by_name("coauthor")
    assert sorted(u.username for u in coauthors if u.username) == [
        "coauthor1",
        "coauthor2",
        "coauthor3",
    ]
    assert repr(me) == "NomadUser(name='Test One')"


# -- where it runs: running loops, threads, exit ----------------------------------------------


def test_works_inside_a_running_event_loop_and_in_plain_threads(
    as_test1: LocalServer, calc_zip: Path
) -> None:
    """The same blocking functions work from a coroutine on a running loop and from threads."""

    async def cell() -> tuple[bool, str]:
        running = asyncio.get_running_loop().is_running()
        return running, compat.upload_files_to_nomad(calc_zip)

    running, upload_id = asyncio.run(cell())
    seen: list[str] = []
    threads = [
        threading.Thread(target=lambda: seen.append(compat.get_upload_by_id(upload_id).upload_id))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert running
    assert seen == [upload_id] * 4
    assert [u.upload_id for u in as_test1.state.uploads()] == [upload_id]


def test_a_script_using_compat_exits_cleanly(
    server: LocalServer, tmp_path: Path, calc_zip: Path
) -> None:
    """A plain script's cached connection is closed at exit: the process ends, exit code 0."""
    script = textwrap.dedent(
        f"""
        from nomad_bulk.compat import upload_files_to_nomad, get_upload_by_id
        upload_id = upload_files_to_nomad({str(calc_zip)!r})
        print(get_upload_by_id(upload_id).process_status)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env.update(NOMAD_URL=server.url, NOMAD_USERNAME="test1", NOMAD_PASSWORD="password")
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SUCCESS"
    assert done.stderr == ""  # no unclosed-session warnings at exit
    assert len(server.state.uploads()) == 1
