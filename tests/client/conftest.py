"""Fixtures for the client tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["1.3", "2.0"])
def api_version(request: pytest.FixtureRequest) -> str:
    """Run a test against both NOMAD API dialects."""
    return str(request.param)
