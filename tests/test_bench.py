"""Every benchmark imports: they run by hand or on the GPU machine, not in `make test`, so
a name they import that moved away would otherwise surface only there."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.system  # processes of its own: make test-system


def test_every_benchmark_module_imports() -> None:
    names = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")
    code = f"import importlib\nfor name in {names!r}:\n    importlib.import_module('bench.' + name)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
