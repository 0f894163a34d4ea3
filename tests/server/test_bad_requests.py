"""Bad requests get NOMAD's answers and never crash the server or corrupt its state."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import Api, calc_zip

pytestmark = pytest.mark.anyio


async def test_bad_requests_never_crash_or_corrupt(api: Api) -> None:
    """Malformed bodies, unknown ids, bad params: 4xx answers, no 500, state unchanged."""
    good = await api.upload(calc_zip(2), upload_name="good")
    upload_id = good["upload_id"]
    before = [
        (u.upload_id, u.upload_name, u.process_status, len(u.entries))
        for u in api.server.state.uploads()
    ]
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            f"/uploads/{upload_id}/edit",
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        ),
        ("POST", f"/uploads/{upload_id}/edit", {"json": ["a", "list"]}),
        ("POST", f"/uploads/{upload_id}/edit", {"json": {"metadata": "string"}}),
        ("POST", f"/uploads/{upload_id}/edit", {"json": {"metadata": {"coauthors": [1, 2]}}}),
        ("POST", f"/uploads/{upload_id}/edit", {"json": {"metadata": {"embargo_length": "x"}}}),
        ("POST", f"/uploads/{upload_id}/edit", {"json": {"entries": {"nope": {"comment": "x"}}}}),
        ("POST", "/datasets/", {"data": b"{", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/datasets/", {"json": {"dataset_name": 5}}),
        ("POST", "/datasets/", {"json": {"dataset_name": "x", "dataset_type": "weird"}}),
        ("POST", "/entries/query", {"data": b"[", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/entries/query", {"json": {"owner": "martian"}}),
        ("POST", "/entries/query", {"json": {"query": "not a dict"}}),
        ("GET", "/uploads", {"params": {"page_size": "ten"}}),
        ("GET", "/uploads", {"params": {"page_after_value": "abc"}}),
        ("GET", "/uploads", {"params": {"roles": "emperor"}}),
        ("GET", "/uploads", {"params": {"order": "sideways"}}),
        ("GET", f"/uploads/{upload_id}/rawdir/../../etc", {}),
        ("GET", f"/uploads/{upload_id}/raw/%2e%2e/secret", {}),
        ("GET", "/uploads/unknown/entries", {}),
        ("GET", "/uploads/unknown/rawdir/", {}),
        ("DELETE", "/uploads/unknown", {}),
        ("POST", "/uploads/unknown/action/publish", {}),
        ("GET", "/entries/unknown/raw", {}),
        ("GET", "/entries/unknown/archive/download", {}),
        ("GET", "/auth/app_token", {"params": {"expires_in": "soon"}}),
        ("POST", "/uploads", {"params": {"embargo_length": "many"}, "data": b""}),
        ("POST", "/uploads", {"params": {"file_name": "../evil.zip"}, "data": b"x"}),
        ("GET", "/nonexistent/route", {}),
        ("PATCH", f"/uploads/{upload_id}", {}),
    ]
    for method, path, kwargs in cases:
        status, body = await api.call(method, path, **kwargs)
        assert 400 <= status < 500, (method, path, status, body)
        assert isinstance(body, dict) and "detail" in body, (method, path, body)
    assert 500 not in api.server.state.status_counts
    after = [
        (u.upload_id, u.upload_name, u.process_status, len(u.entries))
        for u in api.server.state.uploads()
    ]
    assert after == before
    assert api.server.state.datasets() == []
    again = await api.upload(calc_zip(1))
    assert again["data"]["process_status"] == "SUCCESS"


async def test_body_aborted_mid_transfer_creates_nothing(api: Api) -> None:
    """A client that stops sending half-way leaves no upload and no temp files behind."""
    import asyncio

    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    headers = (
        f"POST {api.server.config.prefix}/uploads?file_name=a.zip HTTP/1.1\r\n"
        f"Host: {api.server.host}\r\n"
        f"Authorization: Bearer {api.tokens['test1']}\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    writer.write(headers.encode() + b"x" * 1000)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    status, data = await api.call("GET", "/uploads")
    assert status == 200 and data["pagination"]["total"] == 0
    assert api.server.state.uploads() == []
    del reader
