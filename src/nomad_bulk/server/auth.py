"""Signed bearer tokens (HS256 JWTs, stdlib ``hmac``) with an ``exp`` claim."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenError", "TokenInfo", "TokenSigner"]

_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """A bearer token was refused; ``expired`` tells expiry from forgery."""

    def __init__(self, message: str, *, expired: bool = False, app_token: bool = False) -> None:
        super().__init__(message)
        self.expired = expired
        self.app_token = app_token


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a valid token says: whose it is, when it was issued and when it expires."""

    user_id: str
    expires_at: float
    issued_at: float | None
    app_token: bool


class TokenSigner:
    """Issues and verifies tokens with one secret (kept across restarts by the state)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "TokenSigner(secret=***)"

    def _sign(self, payload: dict[str, Any]) -> str:
        head = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
        body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
        mac = hmac.new(self._secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64encode(mac)}"

    def access_token(self, user_id: str, username: str, lifetime: float) -> tuple[str, float]:
        """A login token (like Keycloak's) and its expiry time (unix seconds)."""
        now = time.time()
        exp = now + lifetime
        payload = {
            "sub": user_id,
            "preferred_username": username,
            "iat": now,
            "exp": exp,
            "typ": "Bearer",
        }
        return self._sign(payload), exp

    def app_token(self, user_id: str, lifetime: float) -> str:
        """A NOMAD app token: payload exactly ``{user, exp}``."""
        return self._sign({"user": user_id, "exp": time.time() + lifetime})

    def verify(self, token: str, *, now: float | None = None) -> TokenInfo:
        """Check signature and expiry; raise :class:`TokenError` otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed")
        head, body, mac = parts
        expected = hmac.new(self._secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        try:
            given = _b64decode(mac)
            payload = json.loads(_b64decode(body))
        except (binascii.Error, ValueError):
            raise TokenError("malformed") from None
        if not hmac.compare_digest(given, expected) or not isinstance(payload, dict):
            raise TokenError("bad signature")
        is_app = "user" in payload and "sub" not in payload
        user_id = payload.get("user" if is_app else "sub")
        exp = payload.get("exp")
        if not isinstance(user_id, str) or not isinstance(exp, (int, float)):
            raise TokenError("unexpected payload", app_token=is_app)
        if (time.time() if now is None else now) >= exp:
            raise TokenError("expired", expired=True, app_token=is_app)
        iat = payload.get("iat")
        return TokenInfo(
            user_id=user_id,
            expires_at=float(exp),
            issued_at=float(iat) if isinstance(iat, (int, float)) else None,
            app_token=is_app,
        )
