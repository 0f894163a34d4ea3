"""Token lifecycle: log in, know when the token runs out, renew it in time.

Sources, in order: a given token (``NOMAD_TOKEN``: an access token, an app
token or a 2.0 personal access token) and/or a username/password pair that
logs in with ``POST /auth/token`` (``grant_type=password``). The token's
``exp`` claim is read without verifying the signature (only the server can);
the token is renewed shortly before it expires, behind a lock with a re-check
so that concurrent requests trigger one login, not many. Optionally a NOMAD
app token is minted after login for runs that last days.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from ..config import Secret, Settings
from ..errors import NomadBulkError

__all__ = ["Token", "TokenManager", "jwt_expiry"]

logger = logging.getLogger("nomad_bulk.client")

#: Renew this long before ``exp`` (capped at a quarter of the token's lifetime).
REFRESH_MARGIN = 30.0


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix seconds) of a JWT, read without verification, or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(decoded)
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        return float(exp)
    return None


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token with what is known about its lifetime."""

    value: Secret
    kind: str  # "given", "login" or "app"
    obtained_at: float
    expires_at: float | None = None

    def renew_at(self) -> float | None:
        """Wall-clock time from which the token should be replaced."""
        if self.expires_at is None:
            return None
        lifetime = max(0.0, self.expires_at - self.obtained_at)
        return self.expires_at - min(REFRESH_MARGIN, lifetime / 4)

    def header(self) -> str:
        """The ``Authorization`` header value; call only where it is sent."""
        return f"Bearer {self.value.get()}"

    def __repr__(self) -> str:
        return f"Token(kind={self.kind!r}, expires_at={self.expires_at!r})"


LoginFn = Callable[[str, Secret], Awaitable[tuple[Secret, float | None]]]
MintFn = Callable[[Token, float], Awaitable[Secret]]


class TokenManager:
    """Hands out a valid bearer token and renews it before or after it runs out."""

    def __init__(
        self,
        settings: Settings,
        *,
        login: LoginFn,
        mint_app_token: MintFn,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._login_fn = login
        self._mint_fn = mint_app_token
        self._clock = clock
        self._lock = anyio.Lock()
        self._token: Token | None = None
        self._mint_failed = False
        #: Number of logins made (for statistics and tests).
        self.logins = 0
        if settings.token:
            self._token = self._make(settings.token, "given")

    def __repr__(self) -> str:
        return f"TokenManager(user={self._settings.username!r}, token={self._token!r})"

    @property
    def has_credentials(self) -> bool:
        """True if any token or login is configured."""
        return self._settings.has_credentials

    @property
    def can_login(self) -> bool:
        """True if a username and password are configured."""
        return bool(self._settings.username) and bool(self._settings.password)

    def _make(self, value: Secret, kind: str, expires_in: float | None = None) -> Token:
        now = self._clock()
        expires_at = jwt_expiry(value.get())
        if expires_at is None and expires_in is not None:
            expires_at = now + expires_in
        return Token(value=value, kind=kind, obtained_at=now, expires_at=expires_at)

    @property
    def _minting(self) -> bool:
        return self._settings.app_token_lifetime > 0 and not self._mint_failed

    def _valid(self, token: Token) -> bool:
        return token.expires_at is None or self._clock() < token.expires_at

    def _stale(self, token: Token | None) -> bool:
        if token is None:
            return True
        if self._minting and token.kind != "app":
            return True  # swap a short-lived token for a long-lived app token
        renew_at = token.renew_at()
        return renew_at is not None and self._clock() >= renew_at

    def _renewable(self, token: Token | None) -> bool:
        if self.can_login:
            return True
        # Without a password, an app token can be minted while the current one is valid.
        return token is not None and self._minting and self._valid(token)

    async def current(self) -> Token | None:
        """A token fresh enough to use now, or None when no credentials are configured."""
        token = self._token
        if not self._stale(token) or not self.has_credentials:
            return token
        if not self._renewable(token):
            return token  # nothing better available; the server will say 401
        async with self._lock:
            token = self._token
            if self._stale(token):
                token = await self._renew(token)
            return token

    async def after_unauthorized(self, used: Token | None) -> Token | None:
        """After a 401 with ``used``: a different token to replay with, or None."""
        async with self._lock:
            if self._token is not None and self._token is not used:
                return self._token  # another request renewed it meanwhile
            if not self.can_login:
                return None
            self._token = None
            return await self._renew(None, force_login=True)

    async def _try_mint(self, token: Token) -> Token | None:
        try:
            value = await self._mint_fn(token, self._settings.app_token_lifetime)
        except NomadBulkError as exc:
            # Not fatal: keep working with the current token and stop trying.
            self._mint_failed = True
            logger.warning("could not mint an app token (%s)", type(exc).__name__)
            return None
        return self._make(value, "app")

    async def _renew(self, token: Token | None, *, force_login: bool = False) -> Token | None:
        if not force_login and token is not None and self._minting and self._valid(token):
            minted = await self._try_mint(token)
            if minted is not None:
                self._token = minted
                return minted
            if not self._stale(token):
                return token
        username = self._settings.username
        password = self._settings.password
        if not username or password is None or not password:
            return token
        value, expires_in = await self._login_fn(username, password)
        self.logins += 1
        fresh = self._make(value, "login", expires_in)
        if self._minting:
            fresh = await self._try_mint(fresh) or fresh
        self._token = fresh
        logger.debug("logged in as %s (token kind %s)", username, fresh.kind)
        return fresh
