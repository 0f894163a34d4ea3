"""Configuration of the local NOMAD server: users, limits, durations, faults."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .faults import FaultPlan

__all__ = ["API_VERSIONS", "DEFAULT_USERS", "ServerConfig", "UserSpec"]

#: The NOMAD API generations the server can imitate.
API_VERSIONS = ("1.3", "2.0")

_USER_NAMESPACE = uuid.UUID("5f0b2a52-4a35-4d0e-9a57-0c5f3a1c7e11")


@dataclass(frozen=True, slots=True)
class UserSpec:
    """A user account the server accepts; the password never shows in ``repr``."""

    username: str
    password: str = field(repr=False)
    email: str | None = None
    user_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    affiliation: str | None = None
    is_admin: bool = False

    @property
    def resolved_user_id(self) -> str:
        """The configured user_id, or a stable UUID derived from the username."""
        return self.user_id or str(uuid.uuid5(_USER_NAMESPACE, self.username))

    @property
    def resolved_email(self) -> str:
        """The configured e-mail, or ``<username>@example.org``."""
        return self.email or f"{self.username}@example.org"


def _coauthor(n: int) -> UserSpec:
    return UserSpec(
        f"coauthor{n}",
        "password",
        f"coauthor{n}@example.org",
        first_name="Coauthor",
        last_name=str(n),
        affiliation="Example Institute",
    )


#: The accounts of a real local NOMAD (same ids), plus three coauthors.
DEFAULT_USERS: tuple[UserSpec, ...] = (
    UserSpec(
        "test1",
        "password",
        "test1@example.org",
        user_id="68878af7-6845-46c0-b2c1-250d4d8eb470",
        first_name="Test",
        last_name="One",
        affiliation="Example Institute",
    ),
    UserSpec(
        "test2",
        "password",
        "test2@example.org",
        user_id="a03af8b6-3aa7-428a-b3b1-4a6317e576b6",
        first_name="Test",
        last_name="Two",
        affiliation="Example Institute",
    ),
    UserSpec(
        "admin",
        "password",
        "admin@example.org",
        user_id="00000000-0000-0000-0000-000000000000",
        first_name="Admin",
        last_name="Istrator",
        is_admin=True,
    ),
    _coauthor(1),
    _coauthor(2),
    _coauthor(3),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything that shapes one local server; all durations are seconds."""

    api_version: str = "1.3"
    prefix: str = "/api/v1"
    users: tuple[UserSpec, ...] = DEFAULT_USERS
    token_lifetime: float = 3600.0
    upload_limit: int = 10
    max_upload_size: int = 32 * 1024**3
    processing_time: float = 0.0
    time_per_entry: float = 0.0
    edit_time: float = 0.0
    publish_time: float = 0.0
    delete_time: float = 0.0
    latency: float = 0.0
    data_dir: Path | None = None
    faults: FaultPlan = field(default_factory=lambda: FaultPlan())
    seed: int = 0

    def __post_init__(self) -> None:
        if self.api_version not in API_VERSIONS:
            raise ValueError(f"api_version must be one of {API_VERSIONS}, not {self.api_version!r}")
        if self.prefix and (not self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ValueError("prefix must start with '/' and must not end with '/'")
        names = [u.username for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("usernames must be unique")

    @property
    def is_v2(self) -> bool:
        """True when the server imitates NOMAD 2.0."""
        return self.api_version == "2.0"
