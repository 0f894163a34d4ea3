"""A local NOMAD-compatible API server for offline rehearsal and for tests.

::

    async with running_server(ServerConfig(processing_time=0.01)) as srv:
        srv.url      # "http://127.0.0.1:PORT/api/v1"
        srv.state    # in-process view: uploads(), datasets(), counters
"""

from __future__ import annotations

from .app import make_app
from .config import API_VERSIONS, DEFAULT_USERS, ServerConfig, UserSpec
from .faults import FaultInjector, FaultPlan, FaultRule
from .runner import LocalServer, running_server
from .state import (
    DatasetRecord,
    EntryRecord,
    ServerState,
    UploadRecord,
    UserRecord,
    entry_id_for,
)

__all__ = [
    "API_VERSIONS",
    "DEFAULT_USERS",
    "DatasetRecord",
    "EntryRecord",
    "FaultInjector",
    "FaultPlan",
    "FaultRule",
    "LocalServer",
    "ServerConfig",
    "ServerState",
    "UploadRecord",
    "UserRecord",
    "UserSpec",
    "entry_id_for",
    "make_app",
    "running_server",
]
