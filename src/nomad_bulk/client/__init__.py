"""The async NOMAD client: one session, typed results, safe retries.

```
async with NomadClient(Settings.from_env()) as nomad:
    upload = await nomad.create_upload(path, upload_name="run-42/calc-1")
    upload = await nomad.wait_for_process(upload.upload_id)
```
"""

from __future__ import annotations

from ._client import ClientState, NomadClient, ServerInfo, process_names
from ._http import ClientStats, ResponseInfo
from ._retry import RetryPolicy

__all__ = [
    "ClientState",
    "ClientStats",
    "NomadClient",
    "ResponseInfo",
    "RetryPolicy",
    "ServerInfo",
    "process_names",
]
