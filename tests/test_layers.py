"""Dependencies point one way: app -> models <- training, and models imports no framework."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "models": {
        "app",
        "training",
        "fastapi",
        "pydantic",
        "pydantic_settings",
        "argparse",
        "matplotlib",
        "starlette",
    },
    "training": {"app", "fastapi"},
    "app": {"training"},
}
# Training draws its curves into each bundle and the service draws them again on request:
# one drawing, in the core, with the plotting library confined to that one module.
EXEMPT = {"models/curves.py": {"matplotlib"}}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        exempt = EXEMPT.get(str(path.relative_to(ROOT)), set())
        bad = imported_modules(path) & FORBIDDEN[package] - exempt
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_models_never_reads_the_environment() -> None:
    for path in (ROOT / "models").rglob("*.py"):
        assert "os.environ" not in path.read_text(), path
