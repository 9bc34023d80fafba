"""The house's one rule, checked over the package's own imports: arrows point down only.

apps → lm → core: the core imports neither the language model nor the applications, the language
model does not import the applications, and a room uses only the public names of the rooms below
it (no ``_private`` module or name). Read from the source with ``ast``, so it holds for imports
inside functions too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scratchrnn

PACKAGE = Path(scratchrnn.__file__).parent
ROOMS = ("core", "lm", "apps")  # each may import the ones before it in this list, never after


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "scratchrnn" and parts[1] in ROOMS else None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every scratchrnn import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("scratchrnn")]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; the house uses absolute ones"
            if node.module and node.module.startswith("scratchrnn"):
                found += [(node.module, a.name, node.lineno) for a in node.names]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_use_public_names(path):
    here = _module_name(path)
    room = _room(here)
    for module, name, line in _imports(path):
        target = _room(f"{module}.{name}" if module == "scratchrnn" and name else module)
        where = f"{path.relative_to(PACKAGE)}:{line} imports {module}{'.' + name if name else ''}"
        if room is None:  # scratchrnn/__init__.py, __main__.py: the front door
            continue
        assert target is not None, f"{where}: the rooms import each other, not the package root"
        assert ROOMS.index(target) <= ROOMS.index(room), f"{where}: {room} must not import {target}"
        if target != room:
            private = [p for p in [*module.split("."), name or ""] if p.startswith("_")]
            assert not private, f"{where}: a private name of another room"


def _private_names(paths) -> set[str]:
    """The ``_private`` functions, classes, properties and ``self._attributes`` these files define."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_applications_reach_no_private_attribute_of_the_library():
    library = _private_names(p for p in SOURCES if _room(_module_name(p)) in ("core", "lm"))
    apps = [p for p in SOURCES if _room(_module_name(p)) == "apps"]
    own = _private_names(apps)
    for path in apps:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in library - own:
                pytest.fail(f"{path.relative_to(PACKAGE)}:{node.lineno}: uses the library's {node.attr}")


def test_the_rooms_are_all_there():
    rooms = {_room(_module_name(p)) for p in SOURCES}
    assert rooms == {None, *ROOMS}


def test_importing_the_library_loads_no_application():
    code = (
        "import sys, scratchrnn, scratchrnn.lm.train\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('scratchrnn.apps'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
