"""Parsing NOMAD's JSON into the typed models."""

from __future__ import annotations

from datetime import timezone

from nomad_bulk.config import Secret, Settings, resolve_url, sanitize_url
from nomad_bulk.models import Entry, ProcessStatus, Upload, parse_timestamp


def test_timestamps_of_both_versions_parse_to_the_same_utc_moment() -> None:
    """1.3's naive UTC and 2.0's Z-suffixed timestamps are the same instant."""
    naive = parse_timestamp("2024-10-15T20:02:10.378000")
    zulu = parse_timestamp("2024-10-15T20:02:10.378000Z")
    assert naive == zulu
    assert naive is not None and naive.tzinfo is timezone.utc


def test_missing_fields_are_none_and_running_follows_status() -> None:
    """Omitted null fields become None; process_running is derived when absent."""
    upload = Upload.from_json({"upload_id": "u", "process_status": "PENDING"})
    assert upload.upload_name is None and upload.publish_time is None
    assert upload.process_running is True
    assert upload.process_status is ProcessStatus.PENDING
    assert not upload.succeeded


def test_entry_from_proc_data_reads_index_metadata() -> None:
    """Datasets, comment and processed come from entry_metadata."""
    entry = Entry.from_json(
        {
            "entry_id": "e",
            "process_status": "SUCCESS",
            "mainfile": "a/aims.out",
            "entry_metadata": {
                "processed": True,
                "comment": "c",
                "datasets": [{"dataset_id": "d1", "dataset_name": "n"}],
            },
        }
    )
    assert entry.dataset_ids == ("d1",)
    assert entry.comment == "c"
    assert not entry.failed


def test_secrets_never_show_in_repr() -> None:
    """Settings and Secret reprs hide the password and token."""
    settings = Settings(username="u", password=Secret("hunter2"), token=Secret("tok-123"))
    text = f"{settings!r} {settings} {settings.password} {settings.token}"
    assert "hunter2" not in text and "tok-123" not in text


def test_aliases_and_sanitizing() -> None:
    """Aliases map to NOMAD's API bases; sanitized URLs drop user info and query."""
    assert resolve_url(None).endswith("/prod/v1/test/api/v1")
    assert resolve_url("prod") == "https://nomad-lab.eu/prod/v1/api/v1"
    assert sanitize_url("https://u:p@h:8/x?token=t") == "https://h:8/x"


def test_typed_init_signature_matches_the_fields() -> None:
    """The type-checking __init__ of Settings lists exactly the dataclass fields."""
    import ast
    import dataclasses
    import inspect

    import nomad_bulk.config as config_module

    tree = ast.parse(inspect.getsource(config_module))
    inits = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    ]
    (init,) = [n for n in inits if any(a.arg == "password" for a in n.args.kwonlyargs)]
    declared = [a.arg for a in init.args.kwonlyargs]
    assert declared == [f.name for f in dataclasses.fields(Settings)]


def test_plain_string_secrets_are_wrapped() -> None:
    """Passing a plain string password yields a Secret that hides itself."""
    settings = Settings(username="u", password="hunter2")
    assert isinstance(settings.password, Secret)
    assert settings.password.get() == "hunter2"
    assert settings.has_credentials
