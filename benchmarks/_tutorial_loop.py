"""The tutorial's way, as a baseline: sequential, blocking HTTP, one new connection per call.

This follows the NOMAD tutorial (part 2) and the helper package it imports: every call opens a
new connection (``requests.get``/``post`` without a session; here ``urllib``), a bearer token is
fetched with ``GET /auth/token`` and cached for 180 s, the zip is POSTed as a raw body, and each
step waits in a ``while`` loop that sleeps a fixed ``interval`` between status checks. Steps run
per folder (upload → wait → entries → edit → wait → publish → wait) so that the run stays within
NOMAD's limit of 10 unpublished uploads; the tutorial uploads all folders first, which only works
for at most 10 folders. A sequential loop costs the same in either order.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN_TTL = 180.0


@dataclass
class TutorialLoop:
    """One user following the tutorial against ``url`` with a fixed polling ``interval``."""

    url: str
    username: str
    password: str
    interval: float
    requests: int = 0
    _token: str = ""
    _token_time: float = field(default=-1e9)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        auth: bool = True,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._get_token()}"
        if content_type:
            headers["Content-Type"] = content_type
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(
            self.url + path + query, data=body, method=method, headers=headers
        )
        self.requests += 1
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def _get_token(self) -> str:
        if time.monotonic() - self._token_time > TOKEN_TTL:
            query = urllib.parse.urlencode({"username": self.username, "password": self.password})
            self.requests += 1
            with urllib.request.urlopen(f"{self.url}/auth/token?{query}", timeout=60) as r:
                self._token = json.loads(r.read())["access_token"]
            self._token_time = time.monotonic()
        return self._token

    def _wait_success(self, upload_id: str, max_wait_time: float = 60.0) -> dict[str, Any]:
        elapsed = 0.0
        while elapsed < max_wait_time:
            upload: dict[str, Any] = self._call("GET", f"/uploads/{upload_id}")["data"]
            if upload["process_status"] == "SUCCESS":
                return upload
            time.sleep(self.interval)
            elapsed += self.interval
        raise TimeoutError(f"upload {upload_id} is not complete after {max_wait_time} s")

    def create_dataset(self, name: str) -> str:
        """Create the run's dataset (``create_dataset`` of the tutorial)."""
        body = json.dumps({"dataset_name": name}).encode()
        answer = self._call("POST", "/datasets/", body=body, content_type="application/json")
        return str(answer["dataset_id"])

    def upload_folder(self, zip_path: Path, index: int, dataset_id: str) -> tuple[str, str]:
        """Upload one zip and take it through processing, edit and publish; return the ids."""
        # The tutorial's helper passes the open file to ``requests.post(data=f)``, which sends
        # a raw body without a Content-Type; urllib would label it form-urlencoded, and
        # NOMAD then parses it as a form and creates an empty upload.
        answer = self._call(
            "POST",
            "/uploads",
            body=zip_path.read_bytes(),
            content_type="application/octet-stream",
        )
        upload_id = str(answer["upload_id"])
        self._wait_success(upload_id)
        entries = self._call("GET", f"/uploads/{upload_id}/entries")["data"]
        entry_id = str(entries[0]["entry_id"])
        metadata = {
            "metadata": {"upload_name": f"Test Upload - DFT-{index}", "datasets": dataset_id}
        }
        self._call(
            "POST",
            f"/uploads/{upload_id}/edit",
            body=json.dumps(metadata).encode(),
            content_type="application/json",
        )
        self._wait_success(upload_id)
        self._call("POST", f"/uploads/{upload_id}/action/publish")
        self._wait_success(upload_id)
        return upload_id, entry_id
