"""The import rules of the layout (README, Development), read from the sources with ``ast``:

- the core (``flumph/``) imports no component and no web framework;
- a component imports the core, never another component, except that the server components and
  the composition may use the shared service glue (``flumph.service``) and the composition
  (``flumph.up``) may import the server components it composes;
- the agent and ctl import nothing from the ``[server]`` extra, so they install without it.

Every import counts, including those inside functions (the lazy ones are the easiest to miss).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
# flumph.<name> -> its folder, for every component (every mapped folder but the core's).
COMPONENTS = {pkg.split(".")[1]: folder for pkg, folder in PACKAGE_DIR.items() if pkg != "flumph"}
WEB_FRAMEWORKS = {"fastapi", "uvicorn", "starlette", "prometheus_client", "amqtt", "websockets"}
SERVER_ONLY = WEB_FRAMEWORKS | {"argon2"}

GLUE = "service"
# Who may import which other component (besides the core).
ALLOWED: dict[str, set[str]] = {
    "broker": {GLUE},
    "ingest": {GLUE},
    "dashboard": {GLUE},
    "up": {GLUE, "broker", "ingest", "dashboard"},
    "agent": set(),
    "ctl": set(),
    GLUE: set(),
}
# Components that must install without the [server] extra.
LIGHT = {"agent", "ctl"}


def imported(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path``, a module of ``package``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            # `from flumph import up` imports the module flumph.up.
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def component_of(module: str) -> str | None:
    """The component a module belongs to, or None for the core and third-party modules."""
    parts = module.split(".")
    if parts[0] == "flumph" and len(parts) > 1 and parts[1] in COMPONENTS:
        return parts[1]
    return None


def sources(folder: str, package: str) -> Iterator[tuple[Path, str]]:
    for path in sorted((ROOT / folder).rglob("*.py")):
        sub = path.relative_to(ROOT / folder).with_suffix("").parts
        yield path, ".".join([package, *sub[:-1]])


def test_every_folder_with_python_is_mapped() -> None:
    """A new top-level package folder must be mapped, or the rules below would not see it."""
    mapped = set(PACKAGE_DIR.values())
    unmapped = {
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in mapped and p.parent.name not in {"tests", "bench"}
    }
    assert not unmapped, f"package folders missing from pyproject's package-dir: {unmapped}"
    assert set(ALLOWED) == set(COMPONENTS), "every component needs a rule in ALLOWED"


def test_every_package_folder_is_installed() -> None:
    """setuptools installs only the packages listed: a subpackage missing from the list works in
    an editable install and is absent from the wheel (the Docker image)."""
    found = set()
    for package, folder in PACKAGE_DIR.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            sub = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([package, *sub]))
    missing = found - set(SETUPTOOLS["packages"])
    assert not missing, f"add to pyproject's [tool.setuptools] packages: {sorted(missing)}"


def test_the_core_imports_no_component_and_no_web_framework() -> None:
    problems = []
    for path, package in sources("flumph", "flumph"):
        for line, module in imported(path, package):
            top = module.split(".")[0]
            if component_of(module) or top in WEB_FRAMEWORKS:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_a_component_imports_only_the_core_and_what_it_is_allowed(name: str) -> None:
    problems = []
    for path, package in sources(COMPONENTS[name], f"flumph.{name}"):
        for line, module in imported(path, package):
            other = component_of(module)
            if other and other != name and other not in ALLOWED[name]:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if name in LIGHT and module.split(".")[0] in SERVER_ONLY:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module} ([server])")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_what_it_must_refuse(tmp_path: Path) -> None:
    """The rules above pass only if the parser finds imports in all their forms."""
    source = tmp_path / "m.py"
    source.write_text(
        "import fastapi\n"
        "from flumph import up\n"
        "def lazy():\n"
        "    from flumph.ingest.service import IngestService\n"
        "from ..dashboard import fleet\n"
    )
    found = {module for _, module in imported(source, "flumph.agent")}
    assert "fastapi" in found
    assert component_of("flumph.up") == "up" and "flumph.up" in found
    assert "flumph.ingest.service" in found
    assert "flumph.dashboard.fleet" in found
    assert component_of("flumph.media.fmp4") is None
