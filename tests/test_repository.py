"""The repository stands on its own: every dependency pinned, nothing pointing outside it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Places outside the repository that code, tests and scripts must never name (spelled in
# pieces so that this file does not name them either).
OUTSIDE = ("../" + "shared", "DESIGN" + ".md", "STYLE" + ".md")
CODE_DIRS = ("app", "models", "training", "tests", "bench", "scripts", "docs")
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# The packages whose every module the architecture document describes.
DESCRIBED = ("app", "models", "training")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {normalized(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}  # type: ignore[union-attr]


def pins() -> dict[str, str]:
    text = (ROOT / "constraints.txt").read_text()
    return {normalized(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)}


def test_every_dependency_of_every_extra_is_pinned() -> None:
    missing = declared_dependencies() - set(pins())
    assert not missing, f"{sorted(missing)} not in constraints.txt: run `make lock`"


def test_torch_is_pinned_at_the_version_every_install_uses() -> None:
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^TORCH_VERSION := (\S+)$", makefile, re.M)
    assert version is not None
    assert pins()["torch"] == version[1]


def test_nothing_refers_outside_the_repository() -> None:
    offenders = [f"README.md: {w}" for w in OUTSIDE if w in (ROOT / "README.md").read_text()]
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".sh", ".js", ".html", ".css", ".md"}:
                text = path.read_text(errors="replace")
                offenders += [f"{path.relative_to(ROOT)}: {w}" for w in OUTSIDE if w in text]
    assert not offenders


def test_the_architecture_document_names_every_module() -> None:
    """A module added without a line in docs/architecture.md fails here: say what it is for."""
    text = ARCHITECTURE.read_text()
    modules = [
        path.relative_to(ROOT).as_posix()
        for package in DESCRIBED
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
    ]
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_every_route_is_documented() -> None:
    """Every path of the OpenAPI document appears, as a whole path, in docs/architecture.md
    or the README."""
    from app.main import create_app
    from app.settings import Settings

    docs = ARCHITECTURE.read_text() + (ROOT / "README.md").read_text()
    paths = create_app(Settings()).openapi()["paths"]  # the document alone: nothing is loaded
    missing = [
        path
        for path in paths
        if not re.search(rf"(?<![\w}}/.-]){re.escape(path)}(?![\w{{/-])", docs)
    ]
    assert not missing, f"routes in neither docs/architecture.md nor README.md: {missing}"


def test_every_file_the_image_copies_is_in_its_build_context() -> None:
    """.dockerignore is an allow-list: a file the Dockerfile copies but the list leaves out
    fails only when an engine builds the image (CI's last stage), so check it here."""
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied |= {w.rstrip("/") for w in words[1:-1] if not w.startswith("--")}
    assert copied, "no COPY found in the Dockerfile"
    assert copied <= allowed, f"copied but left out of the build context: {copied - allowed}"
    assert all((ROOT / path).exists() for path in copied)
