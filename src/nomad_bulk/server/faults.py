"""Fault injection described as data: what goes wrong, how often, seeded.

A :class:`FaultPlan` is plain, JSON-loadable data (``--faults SPEC`` on the
command line takes a JSON string or ``@file``); a :class:`FaultInjector` applies
it at run time with its own seeded random generator and counts every fault it
injected, so chaos tests can report what they survived.

Request faults (``FaultRule.kind``):

- ``"error"``: answer ``status`` before the handler runs (nothing happens);
  with ``retry_after`` the answer carries a ``Retry-After`` header (429/503 bursts).
- ``"after"``: run the handler (e.g. the upload *is* created), then answer
  ``status`` instead of the real response: the response is lost.
- ``"drop"``: read ``drop_after_bytes`` of the request body, then close the
  connection without an answer (a connection dropped mid-body); nothing happens.
- ``"drop_after"``: run the handler, then close the connection without an answer.

``body="html"`` makes an ``error``/``after`` answer an nginx-style HTML page
(``Content-Type: text/html``) instead of NOMAD's JSON, as a reverse proxy in
front of NOMAD answers 502/503/504; with ``body="html"`` the status may also be
a 2xx (a captive portal or a web page where the API was expected).

Routes are the server's route templates without the API prefix, e.g.
``"/uploads/{upload_id}"``; ``method`` and ``route`` accept ``fnmatch`` patterns.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

__all__ = ["FAULT_BODIES", "FAULT_KINDS", "FaultInjector", "FaultPlan", "FaultRule"]

#: The request fault kinds a rule can have.
FAULT_KINDS = ("error", "after", "drop", "drop_after")
#: What an ``error``/``after`` answer carries: NOMAD's JSON or a proxy's HTML page.
FAULT_BODIES = ("json", "html")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """One kind of request fault on matching requests.

    ``share`` is the probability per matching request; ``skip`` lets the first
    matching requests pass; ``times`` caps how many faults the rule injects
    (``None``: no cap). ``skip=k, times=n, share=1`` is a burst of ``n``.
    ``body`` is ``"json"`` (NOMAD's ``{"detail": ...}``) or ``"html"`` (a proxy page).
    """

    kind: str = "error"
    method: str = "*"
    route: str = "*"
    share: float = 1.0
    status: int = 503
    times: int | None = None
    skip: int = 0
    retry_after: float | None = None
    drop_after_bytes: int = 0
    body: str = "json"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {self.kind!r}")
        if self.body not in FAULT_BODIES:
            raise ValueError(f"fault body must be one of {FAULT_BODIES}, not {self.body!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError("share must be between 0 and 1")
        lowest = 200 if self.body == "html" else 400
        if self.kind in ("error", "after") and not lowest <= self.status <= 599:
            raise ValueError(
                "status must be an error status (400-599), or 200-599 with body='html'"
            )

    def matches(self, method: str, route: str) -> bool:
        """Whether a request with this method and route template is affected."""
        return fnmatchcase(method.upper(), self.method.upper()) and fnmatchcase(route, self.route)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """What goes wrong on the server, as data.

    Args:
        rules: request faults, tried in order (the first that fires wins).
        error_rate: shorthand, ``{"GET /uploads/{upload_id}": 0.2}`` answers 500 to
            a share of the requests of that route (method may be ``*``).
        latency: seconds added to every request; ``latency_jitter`` adds up to
            that much more, uniformly at random.
        token_max_age: tokens older than this many seconds are refused as expired,
            whatever their ``exp`` says (early token expiry).
        processing_delay: extra seconds for every processing run (slow processing).
        upload_failure_rate: share of processed uploads that end in FAILURE.
        entry_failure_rate: share of entries that end in FAILURE (upload still SUCCESS).
        seed: seed of the fault generator; ``None`` uses the server's seed.
    """

    rules: tuple[FaultRule, ...] = ()
    error_rate: Mapping[str, float] = field(default_factory=dict)
    latency: float = 0.0
    latency_jitter: float = 0.0
    token_max_age: float | None = None
    processing_delay: float = 0.0
    upload_failure_rate: float = 0.0
    entry_failure_rate: float = 0.0
    seed: int | None = None

    def all_rules(self) -> tuple[FaultRule, ...]:
        """The explicit rules followed by the ``error_rate`` shorthand as rules."""
        extra = []
        for key, share in self.error_rate.items():
            method, _, route = key.strip().partition(" ")
            if not route:
                method, route = "*", method
            extra.append(
                FaultRule(kind="error", method=method, route=route, share=share, status=500)
            )
        return (*self.rules, *extra)

    @property
    def is_empty(self) -> bool:
        """True when the plan injects nothing."""
        return self == FaultPlan(seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (the inverse of :meth:`from_dict`)."""
        data = asdict(self)
        data["rules"] = [asdict(rule) for rule in self.rules]
        data["error_rate"] = dict(self.error_rate)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultPlan:
        """Build a plan from JSON data; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault plan keys: {sorted(unknown)}")
        values = dict(data)
        rule_keys = {f.name for f in fields(FaultRule)}
        rules = []
        for raw in values.pop("rules", ()) or ():
            bad = set(raw) - rule_keys
            if bad:
                raise ValueError(f"unknown fault rule keys: {sorted(bad)}")
            rules.append(FaultRule(**raw))
        return cls(rules=tuple(rules), **values)

    @classmethod
    def from_spec(cls, spec: str) -> FaultPlan:
        """Load a plan from a JSON string or ``@path`` to a JSON file."""
        text = Path(spec[1:]).read_text(encoding="utf-8") if spec.startswith("@") else spec
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"fault plan is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("fault plan must be a JSON object")
        return cls.from_dict(data)


class FaultInjector:
    """Applies a :class:`FaultPlan` with seeded randomness and counts what it injected."""

    def __init__(self, plan: FaultPlan, seed: int = 0) -> None:
        self.plan = plan
        base = plan.seed if plan.seed is not None else seed
        self._request_rng = random.Random(f"requests:{base}")
        self._processing_rng = random.Random(f"processing:{base}")
        self._rules = plan.all_rules()
        self._matched = [0] * len(self._rules)
        #: injected faults per rule, in the order of :meth:`FaultPlan.all_rules`
        self.rule_counts = [0] * len(self._rules)
        #: injected faults by kind: error, after, drop, drop_after, latency,
        #: token_expired, upload_failure, entry_failure, and ``status:<code>``
        self.counts: Counter[str] = Counter()

    def pick(self, method: str, route: str) -> FaultRule | None:
        """The rule that fires for this request, if any (and count it)."""
        for index, rule in enumerate(self._rules):
            if not rule.matches(method, route):
                continue
            if rule.times is not None and self.rule_counts[index] >= rule.times:
                continue
            self._matched[index] += 1
            if self._matched[index] <= rule.skip:
                continue
            if rule.share < 1.0 and self._request_rng.random() >= rule.share:
                continue
            self.rule_counts[index] += 1
            self.counts[rule.kind] += 1
            if rule.kind in ("error", "after"):
                self.counts[f"status:{rule.status}"] += 1
            return rule
        return None

    def latency(self) -> float:
        """Seconds of injected latency for one request."""
        delay = self.plan.latency
        if self.plan.latency_jitter > 0:
            delay += self._request_rng.uniform(0.0, self.plan.latency_jitter)
        if delay > 0:
            self.counts["latency"] += 1
        return delay

    def fail_upload(self) -> bool:
        """Whether the processing run about to finish fails (and count it)."""
        rate = self.plan.upload_failure_rate
        if rate > 0 and self._processing_rng.random() < rate:
            self.counts["upload_failure"] += 1
            return True
        return False

    def fail_entry(self) -> bool:
        """Whether the entry about to be processed fails (and count it)."""
        rate = self.plan.entry_failure_rate
        if rate > 0 and self._processing_rng.random() < rate:
            self.counts["entry_failure"] += 1
            return True
        return False

    def token_too_old(self, issued_at: float | None, now: float) -> bool:
        """Whether a token issued at ``issued_at`` is refused by early expiry."""
        max_age = self.plan.token_max_age
        if max_age is None or issued_at is None or now - issued_at < max_age:
            return False
        self.counts["token_expired"] += 1
        return True
