"""Type-checked (never run) uses of the public API: mypy must accept all of these."""

from __future__ import annotations

from pathlib import Path

from nomad_bulk import (
    NomadClient,
    RunOptions,
    RunReport,
    Settings,
    Upload,
    run_upload,
)
from nomad_bulk.engine import Observer
from nomad_bulk.engine.events import Event


async def typed_use(root: Path) -> None:
    """Exercise the signatures users type most."""
    settings = Settings(url="test", username="me", password="secret")
    async with NomadClient(settings) as nomad:
        upload: Upload = await nomad.get_upload("x")
        uploads: list[Upload] = [u async for u in nomad.iter_uploads(is_published=False)]
        del upload, uploads

    def observer(event: Event) -> None:
        print(event)

    watch: Observer = observer
    report: RunReport = await run_upload(
        root, settings=settings, options=RunOptions(dataset="d"), observers=[watch]
    )
    ids: dict[str, list[str]] = report.entry_ids
    del ids
