"""The run journal: identity, permissions, durable transitions, resumability."""

from __future__ import annotations

import stat
from pathlib import Path

import anyio
import pytest

from nomad_bulk.errors import JournalError
from nomad_bulk.journal import AsyncJournal, Journal, RunIdentity, default_journal_path


def identity(
    root: str = "/data/run", url: str = "http://127.0.0.1:1/api/v1", *, per_upload: bool = False
) -> RunIdentity:
    return RunIdentity(
        root=root,
        url=url,
        per_upload=per_upload,
        max_upload_size=10,
        max_per_upload=None,
        pattern=None,
    )


def add_group(journal: Journal, key: str = "g1", items: tuple[str, ...] = ("a", "b")) -> int:
    return journal.add_group(
        key=key,
        upload_name=f"name-{key}",
        label=key,
        size=100,
        expected_entries=len(items),
        items=[(item, 50, {"files": ["aims.out"], "mainfiles": ["aims.out"]}) for item in items],
    )


def test_default_path_is_inside_the_root(tmp_path: Path) -> None:
    """The default journal lives in ROOT/.nomad-bulk/journal.sqlite."""
    assert default_journal_path(tmp_path) == tmp_path.resolve() / ".nomad-bulk" / "journal.sqlite"


def test_new_journal_is_private(tmp_path: Path) -> None:
    """A new journal file is 0600 and its directory 0700."""
    path = tmp_path / "state" / "journal.sqlite"
    journal = Journal.open(path, identity=identity())
    add_group(journal)
    journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for side in path.parent.iterdir():
        assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0, side


def test_refuses_another_root(tmp_path: Path) -> None:
    """Reusing a journal for another root raises JournalError naming both roots."""
    path = tmp_path / "j.sqlite"
    Journal.open(path, identity=identity(root="/data/a")).close()
    with pytest.raises(JournalError, match="/data/a") as info:
        Journal.open(path, identity=identity(root="/data/b"))
    assert "/data/b" in str(info.value) and "--journal" in str(info.value)


def test_refuses_another_deployment(tmp_path: Path) -> None:
    """Reusing a journal that sent uploads against another NOMAD raises JournalError."""
    path = tmp_path / "j.sqlite"
    journal = Journal.open(path, identity=identity(url="http://127.0.0.1:1/api/v1"))
    seq = add_group(journal)
    journal.set_uploaded(seq, "upload-1")
    journal.close()
    with pytest.raises(JournalError, match="deployment"):
        Journal.open(path, identity=identity(url="https://nomad-lab.eu/prod/v1/api/v1"))


def test_grouping_change_is_allowed_and_reported(tmp_path: Path) -> None:
    """Other grouping options are accepted; grouping_changed says so until recorded."""
    path = tmp_path / "j.sqlite"
    Journal.open(path, identity=identity()).close()
    other = identity(per_upload=True)
    journal = Journal.open(path, identity=other)
    assert journal.grouping_changed(other)
    journal.record_grouping(other)
    assert not journal.grouping_changed(other)
    journal.close()


def test_not_a_journal(tmp_path: Path) -> None:
    """A file that is not SQLite is refused with a clear JournalError."""
    path = tmp_path / "j.sqlite"
    path.write_text("hello, I am not a database " * 100)
    with pytest.raises(JournalError, match="not a usable"):
        Journal.open(path, identity=identity())


def test_missing_journal_without_create(tmp_path: Path) -> None:
    """Opening a journal that does not exist with create=False raises JournalError."""
    with pytest.raises(JournalError, match="no journal"):
        Journal.open(tmp_path / "nothing.sqlite", create=False)


def test_transitions_survive_reopening(tmp_path: Path) -> None:
    """Intent, upload id, entry ids and failures are read back after reopening."""
    path = tmp_path / "j.sqlite"
    journal = Journal.open(path, identity=identity())
    run_id = journal.run_id
    seq = add_group(journal)
    journal.set_intent(
        seq,
        file_name="g1.zip",
        sha256="ab" * 32,
        packed_size=42,
        mainfiles={"a": ["a/aims.out"], "b": ["b/aims.out"]},
    )
    assert journal.group(seq).stage == "posting"
    journal.set_uploaded(seq, "U1")
    journal.set_verified(seq, {"a": ["E1"], "b": ["E2"]})
    journal.close()

    again = Journal.open(path, identity=identity())
    assert again.run_id == run_id
    record = again.group(seq)
    assert (record.stage, record.upload_id, record.attempts) == ("verified", "U1", 1)
    items = {i.key: i for i in again.group_items(seq)}
    assert items["a"].entry_ids == ("E1",) and items["b"].upload_mainfiles == ("b/aims.out",)
    again.set_failed(seq, stage="editing", message="NOMAD said no", discard=False)
    failed = again.group(seq)
    assert failed.failed and failed.failed_stage == "editing" and failed.message == "NOMAD said no"
    again.clear_failure(seq)
    assert not again.group(seq).failed and again.group(seq).stage == "verified"
    again.close()


def test_discard_unstarted_keeps_started_groups(tmp_path: Path) -> None:
    """Re-planning forgets groups that never reached the server, and keeps the others."""
    journal = Journal.open(tmp_path / "j.sqlite", identity=identity())
    started = add_group(journal, "g1", ("a",))
    add_group(journal, "g2", ("b",))
    journal.add_skipped("c", 0, {"files": []}, "no mainfile")
    journal.set_intent(started, file_name="x.zip", sha256="0", packed_size=1, mainfiles={})
    journal.discard_unstarted()
    assert [g.key for g in journal.iter_groups()] == ["g1"]
    assert journal.started_group_of("a") == started
    assert journal.started_group_of("b") is None and journal.started_group_of("c") is None
    journal.close()


def test_reset_forgets_the_upload(tmp_path: Path) -> None:
    """reset() returns a group to 'planned' without its upload id or entry ids."""
    journal = Journal.open(tmp_path / "j.sqlite", identity=identity())
    seq = add_group(journal, "g1", ("a",))
    journal.set_intent(seq, file_name="x", sha256="0", packed_size=1, mainfiles={"a": ["a/x"]})
    journal.set_uploaded(seq, "U1")
    journal.set_verified(seq, {"a": ["E1"]})
    journal.reset(seq)
    record = journal.group(seq)
    assert record.stage == "planned" and record.upload_id is None
    assert journal.group_items(seq)[0].entry_ids == ()
    journal.close()


def test_dry_run_rollback_leaves_no_trace(tmp_path: Path) -> None:
    """Planning inside begin()/rollback() leaves the journal as it was."""
    journal = Journal.open(tmp_path / "j.sqlite", identity=identity())
    journal.begin()
    add_group(journal)
    assert journal.count_items() == 2
    journal.rollback()
    assert journal.count_items() == 0
    journal.close()


@pytest.mark.anyio
async def test_async_journal_serialises_calls(tmp_path: Path) -> None:
    """Many concurrent AsyncJournal calls on one connection all land."""
    journal = Journal.open(tmp_path / "j.sqlite", identity=identity())
    aj = AsyncJournal(journal)
    seqs = [add_group(journal, f"g{n}", (f"i{n}",)) for n in range(20)]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n, seq in enumerate(seqs):
                tg.start_soon(aj.durable, journal.set_uploaded, seq, f"U{n}")
    assert sorted(g.upload_id or "" for g in journal.iter_groups()) == sorted(
        f"U{n}" for n in range(20)
    )
    await aj.call(journal.close)


def test_secrets_are_not_stored(tmp_path: Path) -> None:
    """The journal holds no password or token (only root, URL and grouping)."""
    journal = Journal.open(tmp_path / "j.sqlite", identity=identity())
    info = journal.info()
    journal.close()
    assert set(info) == {"schema", "run_id", "root", "url", "grouping", "created"}


def test_one_run_at_a_time(tmp_path: Path) -> None:
    """A second run cannot lock a journal that a run holds; it can after the first closes."""
    path = tmp_path / "j.sqlite"
    first = Journal.open(path, identity=identity(), lock=True)
    with pytest.raises(JournalError, match="another nomad-bulk run"):
        Journal.open(path, identity=identity(), lock=True)
    reader = Journal.open(path, create=False)  # `status` reads without the lock
    reader.close()
    first.close()
    Journal.open(path, identity=identity(), lock=True).close()
