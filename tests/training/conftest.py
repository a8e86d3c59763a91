"""Fixtures of the training tests."""

import pytest

from training import loop


@pytest.fixture
def curves_not_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test whose claim is not the bundle as a whole (weights, resuming, stopping,
    settings, logs): every save's curves.png is the same placeholder instead of a drawing,
    which costs more than a tiny epoch's training. The drawn curves are checked by the
    end-to-end runs and in test_report.py."""
    monkeypatch.setattr(loop, "draw_curves", lambda *_: b"\x89PNG placeholder")
