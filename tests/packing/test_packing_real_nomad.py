"""Packing against the real NOMAD 2.0 (opt-in): nested archives and mainfile matching.

Set ``NOMAD_BULK_REAL_URL`` to the API base of a running real NOMAD (see
``shared/real-nomad``). The matcher comparison also needs NOMAD's Python
(``NOMAD_BULK_REAL_PYTHON``, default ``~/.cache/nomad-real/venv/bin/python``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from nomad_bulk.packing import discover, group_calculations, match_mainfile, pack_group
from nomad_bulk.packing.mainfiles import read_head

from .conftest import write_tree, write_zip
from .samples import AIMS_OUT, CONTROL_IN, CORPUS

REAL_URL = os.environ.get("NOMAD_BULK_REAL_URL", "").rstrip("/")
REAL_PYTHON = Path(
    os.environ.get("NOMAD_BULK_REAL_PYTHON", "~/.cache/nomad-real/venv/bin/python")
).expanduser()

pytestmark = [
    pytest.mark.real_nomad,
    pytest.mark.skipif(not REAL_URL, reason="NOMAD_BULK_REAL_URL is not set"),
    pytest.mark.timeout(600),
]


class _Nomad:
    """Just enough of NOMAD's API, over the standard library."""

    def __init__(self, base: str) -> None:
        self.base = base
        form = urllib.parse.urlencode(
            {"grant_type": "password", "username": "test1", "password": "password"}
        ).encode()
        self.token = self._call("POST", "/auth/token", body=form, form=True)["access_token"]

    def _call(
        self, method: str, path: str, *, body: bytes | None = None, form: bool = False
    ) -> Any:
        headers = {"Accept": "application/json"}
        if form:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            headers["Content-Type"] = "application/octet-stream"
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base + path
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an HTTP URL: {url}")
        request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 (checked above)
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (checked above)
            return json.loads(response.read() or b"{}")

    def upload(self, data: bytes, file_name: str) -> str:
        query = urllib.parse.urlencode({"file_name": file_name, "upload_name": "packing-test"})
        return str(self._call("POST", f"/uploads?{query}", body=data)["upload_id"])

    def wait(self, upload_id: str, deadline: float = 300) -> dict[str, Any]:
        end = time.monotonic() + deadline
        delay = 0.2
        while True:
            data: dict[str, Any] = self._call("GET", f"/uploads/{upload_id}")["data"]
            if not data["process_running"]:
                return data
            assert time.monotonic() < end, f"upload {upload_id} still processing"
            time.sleep(delay)  # polling a real server: nothing to await instead
            delay = min(delay * 1.5, 3.0)

    def mainfiles(self, upload_id: str) -> list[str]:
        entries = self._call("GET", f"/uploads/{upload_id}/entries?page_size=100")["data"]
        return sorted(e["mainfile"] for e in entries)

    def rawdir(self, upload_id: str, path: str) -> list[str]:
        listing = self._call("GET", f"/uploads/{upload_id}/rawdir/{path}")
        return sorted(c["name"] for c in listing["directory_metadata"]["content"])

    def delete(self, upload_id: str) -> None:
        self._call("DELETE", f"/uploads/{upload_id}")


@pytest.fixture(scope="module")
def nomad() -> _Nomad:
    """A logged-in connection to the real NOMAD."""
    return _Nomad(REAL_URL)


def test_nomad_does_not_extract_nested_archives(nomad: _Nomad) -> None:
    """A zip inside the uploaded zip stays a raw file and yields no entries."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("aims.out", AIMS_OUT)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("calc1/inner.zip", inner.getvalue())
        zf.writestr("calc2/aims.out", AIMS_OUT)
    upload_id = nomad.upload(outer.getvalue(), "outer.zip")
    try:
        data = nomad.wait(upload_id)
        assert data["process_status"] == "SUCCESS"
        assert nomad.mainfiles(upload_id) == ["calc2/aims.out"]
        assert nomad.rawdir(upload_id, "calc1") == ["inner.zip"]
    finally:
        nomad.delete(upload_id)


def test_packed_upload_gives_the_predicted_entries(nomad: _Nomad, tmp_path: Path) -> None:
    """A packed group (a repacked ready zip and a plain folder) makes the predicted entries."""
    root = write_tree(
        tmp_path / "root", {"plain/aims.out": AIMS_OUT, "plain/control.in": CONTROL_IN}
    )
    write_zip(root / "DFT-1" / "entry.zip", {"aims.out": AIMS_OUT, "sub/aims.out": AIMS_OUT})
    (group,) = group_calculations(discover(root), per_upload=False)
    packed = pack_group(group, tmp_path / "spool")
    upload_id = nomad.upload(packed.path.read_bytes(), packed.file_name)
    try:
        data = nomad.wait(upload_id)
        assert data["process_status"] == "SUCCESS"
        predicted = sorted(m for ms in packed.mainfiles.values() for m in ms)
        assert (
            nomad.mainfiles(upload_id)
            == predicted
            == [
                "DFT-1/aims.out",
                "DFT-1/sub/aims.out",
                "plain/aims.out",
            ]
        )
        assert data["entries"] == group.expected_entries
    finally:
        nomad.delete(upload_id)


def test_matchers_agree_with_nomads_own_match_parser(tmp_path: Path) -> None:
    """Every corpus file gets from match_mainfile what NOMAD's match_parser decides."""
    if not REAL_PYTHON.exists():
        pytest.skip(f"NOMAD's Python is not at {REAL_PYTHON}")
    corpus = write_tree(
        tmp_path / "corpus", {name: content for name, (content, _) in CORPUS.items()}
    )
    script = textwrap.dedent(
        f"""
        import json, os
        from nomad.parsing.parsers import match_parser
        names = {sorted(CORPUS)!r}
        out = {{}}
        for name in names:
            parser, _ = match_parser(os.path.join({str(corpus)!r}, name))
            aliases = [a for a in getattr(parser, "aliases", []) if a.startswith("parsers/")]
            out[name] = None if parser is None else (aliases[0] if aliases else parser.name)
        print("RESULT" + json.dumps(out))
        """
    )
    done = subprocess.run(
        [str(REAL_PYTHON), "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    nomad_says = json.loads(line.removeprefix("RESULT"))
    ours = {}
    for name, (content, _) in CORPUS.items():
        directory = os.path.dirname(name)
        siblings = [os.path.basename(n) for n in CORPUS if os.path.dirname(n) == directory]
        head, compression = read_head(io.BytesIO(content))
        ours[name] = match_mainfile(name, head, compression=compression, siblings=siblings)
    assert ours == nomad_says
