"""Settings, deployment aliases and secrets, resolved once at the edge.

Precedence for every value: explicit argument > environment (``NOMAD_URL``,
``NOMAD_USERNAME``, ``NOMAD_PASSWORD``, ``NOMAD_TOKEN``) > a ``.env`` file read
with :func:`dotenv.dotenv_values` (``os.environ`` is never written) > defaults.
Nothing here runs at import time. All durations are float seconds.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from .errors import ConfigError

__all__ = [
    "DEPLOYMENTS",
    "Secret",
    "Settings",
    "is_loopback_url",
    "resolve_url",
    "sanitize_url",
]

#: NOMAD's central deployments by alias (API base URLs, see the NOMAD docs).
DEPLOYMENTS: Mapping[str, str] = {
    "prod": "https://nomad-lab.eu/prod/v1/api/v1",
    "staging": "https://nomad-lab.eu/prod/v1/staging/api/v1",
    "test": "https://nomad-lab.eu/prod/v1/test/api/v1",
}

#: Deployments where publishing is public and permanent.
PUBLIC_DEPLOYMENTS = frozenset({DEPLOYMENTS["prod"], DEPLOYMENTS["staging"]})


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret value; call only where it is sent."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("Secret values cannot be pickled")


def resolve_url(url: str | None) -> str:
    """Turn ``prod``/``staging``/``test``/``None`` or a full URL into an API base URL.

    A full URL is kept as given, minus a trailing slash; ``None`` means ``test``.
    """
    if url is None or url.strip() == "":
        return DEPLOYMENTS["test"]
    text = url.strip()
    if text.lower() in DEPLOYMENTS:
        return DEPLOYMENTS[text.lower()]
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"NOMAD URL {sanitize_url(text)!r} is neither 'prod', 'staging', 'test' nor a full "
            "http(s):// API URL such as https://host/nomad-oasis/api/v1"
        )
    return text.rstrip("/")


def sanitize_url(url: str) -> str:
    """Drop user info and query string from a URL so that it is safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if ":" in (parts.hostname or "") and not host.startswith("["):
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_loopback_url(url: str) -> bool:
    """True if the URL's host is a loopback address or ``localhost``."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(value: str | Secret | None) -> Secret | None:
    if isinstance(value, Secret) or value is None:
        return value or None
    return Secret(value) if value else None


def _env(name: str, environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> str | None:
    value = environ.get(name)
    if value is None or value == "":
        value = dotenv.get(name) or None
    return value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where and as whom to talk to NOMAD, and how patiently.

    Use :meth:`from_env` at the edge of a program; the constructor never reads
    the environment.
    """

    url: str = DEPLOYMENTS["test"]
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    #: Mint a NOMAD app token of this lifetime after the first login (0 = never).
    app_token_lifetime: float = 0.0
    allow_insecure_http: bool = False
    verify_tls: bool = True
    ca_bundle: Path | None = None
    connect_timeout: float = 30.0
    read_timeout: float = 300.0
    max_connections: int = 32
    max_retries: int = 6
    retry_max_time: float = 300.0
    retry_initial_wait: float = 0.5
    retry_max_wait: float = 30.0
    user_agent: str = "nomad-bulk"

    if TYPE_CHECKING:
        # The generated __init__ also takes plain strings for the secrets (wrapped at once);
        # this signature tells type checkers so. Keep it in step with the fields above.
        def __init__(
            self,
            *,
            url: str = ...,
            username: str | None = ...,
            password: Secret | str | None = ...,
            token: Secret | str | None = ...,
            app_token_lifetime: float = ...,
            allow_insecure_http: bool = ...,
            verify_tls: bool = ...,
            ca_bundle: Path | str | None = ...,
            connect_timeout: float = ...,
            read_timeout: float = ...,
            max_connections: int = ...,
            max_retries: int = ...,
            retry_max_time: float = ...,
            retry_initial_wait: float = ...,
            retry_max_wait: float = ...,
            user_agent: str = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", resolve_url(self.url))
        # Plain strings are accepted at run time for convenience and wrapped at once.
        object.__setattr__(self, "password", _secret(self.password))
        object.__setattr__(self, "token", _secret(self.token))
        if self.ca_bundle is not None:
            object.__setattr__(self, "ca_bundle", Path(self.ca_bundle))

    @property
    def has_credentials(self) -> bool:
        """True if a token or a username/password pair is set."""
        return bool(self.token) or (bool(self.username) and bool(self.password))

    @property
    def is_public_deployment(self) -> bool:
        """True for prod and staging, where publishing is public and permanent."""
        return self.url in PUBLIC_DEPLOYMENTS

    def check_transport_security(self) -> None:
        """Refuse to send credentials over plain http to a host that is not loopback."""
        if (
            self.has_credentials
            and self.url.startswith("http://")
            and not is_loopback_url(self.url)
            and not self.allow_insecure_http
        ):
            raise ConfigError(
                f"refusing to send credentials over plain http to {sanitize_url(self.url)}; "
                "use https://, or pass allow_insecure_http=True (--allow-insecure-http) "
                "if this network is trusted"
            )

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        *,
        dotenv: str | os.PathLike[str] | bool | None = True,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Resolve settings: explicit ``overrides`` > environment > ``.env`` > defaults.

        ``dotenv`` is a path, ``True`` (look for ``.env`` in the current directory)
        or ``False``/``None`` (read none). Overrides that are ``None`` are ignored.
        """
        env = os.environ if environ is None else environ
        values: Mapping[str, str | None] = {}
        if dotenv is True:
            candidate = Path.cwd() / ".env"
            values = dotenv_values(candidate) if candidate.is_file() else {}
        elif dotenv:
            path = Path(dotenv)
            if not path.is_file():
                raise ConfigError(f".env file {path} does not exist")
            values = dotenv_values(path)
        given = {k: v for k, v in overrides.items() if v is not None}
        url = given.pop("url", None) or _env("NOMAD_URL", env, values)
        username = given.pop("username", None) or _env("NOMAD_USERNAME", env, values)
        password = given.pop("password", None) or _env("NOMAD_PASSWORD", env, values)
        token = given.pop("token", None) or _env("NOMAD_TOKEN", env, values)
        return cls(
            url=resolve_url(url),
            username=username,
            password=_secret(password),
            token=_secret(token),
            **given,
        )
