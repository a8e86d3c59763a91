"""bench/gpu.sh's promise: its in-process parts run on a machine with torch and the
repository but no HTTP stack (the GPU machine may have no fastapi, pydantic or httpx)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HTTP}:
            raise ModuleNotFoundError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
import bench.engine, bench.precision
print("imported")
"""

pytestmark = pytest.mark.system  # processes of its own: make test-system

HTTP = {"fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "httpx", "matplotlib"}


def test_the_gpu_scripts_in_process_benchmarks_need_no_http_stack() -> None:
    code = BLOCK.replace("{HTTP}", repr(HTTP))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
