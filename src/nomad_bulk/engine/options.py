"""What a run does: :class:`RunOptions`, the same choices as ``nomad-bulk upload``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ._backoff import PollPolicy

__all__ = ["MAX_UPLOAD_SIZE", "GiB", "Metadata", "PollPolicy", "RunOptions"]

GiB = 1024**3
#: NOMAD's documented size limit of one upload.
MAX_UPLOAD_SIZE = 32 * GiB
#: NOMAD's longest embargo, in months.
MAX_EMBARGO = 36


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """Options of one run; every field matches a ``nomad-bulk upload`` flag.

    Sizes are bytes, durations float seconds. ``per_upload=True`` makes one
    upload per calculation (as the NOMAD tutorial does); the default packs many
    calculations into each upload, up to ``max_upload_size`` bytes and
    ``max_per_upload`` calculations, each in its own directory of the zip.
    """

    #: Glob selecting calculation folders below the root (``--pattern``).
    pattern: str | None = None
    #: One upload per calculation (``--per-calculation``) instead of packed uploads.
    per_upload: bool = False
    #: Largest upload, in bytes (``--max-upload-size``; at most NOMAD's 32 GiB).
    max_upload_size: int = 10 * GiB
    #: Most calculations in one packed upload (``--max-per-upload``).
    max_per_upload: int | None = None
    #: Concurrent transfers (``--transfers``).
    transfers: int = 4
    #: NOMAD's limit of unpublished uploads per user (``--upload-limit``).
    upload_limit: int = 10
    #: Global request rate, requests per second; ``None`` = unlimited (``--rate``).
    requests_per_second: float | None = 10.0
    #: Dataset to put every entry in, found by name or created (``--dataset``).
    dataset: str | None = None
    #: Coauthors by e-mail or username, resolved before anything is sent (``--coauthor``).
    coauthors: tuple[str, ...] = ()
    #: Reference URLs for every entry (``--reference``).
    references: tuple[str, ...] = ()
    #: Comment for every entry (``--comment``).
    comment: str | None = None
    #: Embargo in months, 0–36 (``--embargo``).
    embargo: int = 0
    #: Publish each upload once it is verified and described (``--publish``).
    publish: bool = False
    #: Upload folders without a recognisable mainfile too (``--allow-empty``).
    allow_empty: bool = False
    #: Keep uploads that failed on the server instead of deleting them (``--keep-failed``).
    keep_failed: bool = False
    #: Plan and check only; nothing is uploaded (``--dry-run``).
    dry_run: bool = False
    #: Where zips are built (default: ``spool/`` next to the journal).
    spool_dir: Path | None = None
    #: Most bytes of built zips waiting on disk at once (default: from free space).
    spool_max_bytes: int | None = None
    #: Threads building zips at once.
    pack_threads: int = 2
    #: Worker tasks carrying uploads through the stages (default: from the limits).
    workers: int | None = None
    #: Polling of NOMAD's processing, edits and publishing.
    poll: PollPolicy = field(default_factory=PollPolicy)
    #: Deadline of one server process (``--processing-timeout``).
    processing_timeout: float = 3600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "coauthors", tuple(self.coauthors))
        object.__setattr__(self, "references", tuple(self.references))
        if self.spool_dir is not None:
            object.__setattr__(self, "spool_dir", Path(self.spool_dir))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first value that cannot work."""
        if not 0 < self.max_upload_size <= MAX_UPLOAD_SIZE:
            raise ConfigError(
                f"max_upload_size must be between 1 byte and NOMAD's limit of 32 GiB "
                f"({MAX_UPLOAD_SIZE} bytes), not {self.max_upload_size}"
            )
        if self.max_per_upload is not None and self.max_per_upload < 1:
            raise ConfigError("max_per_upload must be at least 1")
        if self.transfers < 1:
            raise ConfigError("transfers must be at least 1")
        if self.upload_limit < 1:
            raise ConfigError("upload_limit must be at least 1 (NOMAD's default is 10)")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ConfigError("requests_per_second must be positive (None for unlimited)")
        if not 0 <= self.embargo <= MAX_EMBARGO:
            raise ConfigError(f"embargo must be between 0 and {MAX_EMBARGO} months")
        if self.pack_threads < 1 or (self.workers is not None and self.workers < 1):
            raise ConfigError("pack_threads and workers must be at least 1")
        if self.spool_max_bytes is not None and self.spool_max_bytes < 1:
            raise ConfigError("spool_max_bytes must be positive")
        if self.processing_timeout <= 0:
            raise ConfigError("processing_timeout must be positive")
        if self.dataset is not None and not self.dataset.strip():
            raise ConfigError("the dataset name must not be empty")
        for ref in self.references:
            if not ref.startswith(("http://", "https://")):
                raise ConfigError(f"reference {ref!r} is not an http(s) URL")


@dataclass(frozen=True, slots=True)
class Metadata:
    """The metadata every upload of a run receives, with coauthors resolved to user ids."""

    dataset_id: str | None = None
    coauthors: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    comment: str | None = None
    embargo: int = 0

    @property
    def any(self) -> bool:
        """True if there is something to edit."""
        return bool(
            self.dataset_id or self.coauthors or self.references or self.comment or self.embargo
        )

    @property
    def digest(self) -> str:
        """A short fingerprint; an upload described with another one is edited again."""
        payload = {
            "dataset_id": self.dataset_id,
            "coauthors": sorted(self.coauthors),
            "references": list(self.references),
            "comment": self.comment,
            "embargo": self.embargo,
        }
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_size(text: str) -> int:
    """Parse ``10G``, ``500MB``, ``1.5GiB`` or a plain byte count (binary units)."""
    value = text.strip().lower().replace(" ", "")
    units = {
        "": 1,
        "b": 1,
        "k": 1024,
        "kb": 1024,
        "kib": 1024,
        "m": 1024**2,
        "mb": 1024**2,
        "mib": 1024**2,
        "g": GiB,
        "gb": GiB,
        "gib": GiB,
        "t": 1024**4,
        "tb": 1024**4,
        "tib": 1024**4,
    }
    number = value.rstrip("kmgtib")
    unit = value[len(number) :]
    if unit not in units or not number:
        raise ValueError(f"cannot read {text!r} as a size; use e.g. 10G, 500M or 1048576")
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a size; use e.g. 10G, 500M") from None
    if amount < 0:
        raise ValueError("a size cannot be negative")
    return int(amount * units[unit])


def format_size(size: float) -> str:
    """A short human size such as ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
