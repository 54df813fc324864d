"""Imports run one way: the entry points (`cli/`, `dags/`) on top, the local platform
(`local/`) under them, then the jobs and the lookup API side by side, then the shared core in
`precompute/`, which imports nothing of the project above it.

An import inside a function must say why it waits (a heavy or optional dependency) in a comment.

Read from the source (every import, those inside functions included; `TYPE_CHECKING` blocks
excepted, since they never run), so a wrong-way import fails here before it knots the code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "dags", "local", "jobs", "lookup_api", "precompute")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project modules `path` imports, at run time."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` imports a, and a.b when b is a module.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name in known)


def layer(module: str) -> str:
    package = module.split(".")[0]
    return "entry" if package in ("cli", "dags") else package  # local, jobs, lookup_api or core


# What each layer may import besides itself.
ALLOWED = {
    "entry": {"entry", "local", "jobs", "lookup_api", "precompute"},
    "local": {"local", "jobs", "lookup_api", "precompute"},
    "jobs": {"jobs", "precompute"},
    "lookup_api": {"lookup_api", "precompute"},
    "precompute": {"precompute"},
}


KNOWN = modules()
GRAPH = {name: set(imported(path, KNOWN)) - {name} for name, path in KNOWN.items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_import_runs_down_or_across_its_own_layer(module: str) -> None:
    wrong = sorted(n for n in GRAPH[module] if layer(n) not in ALLOWED[layer(module)])
    assert not wrong, f"{module} ({layer(module)}) imports {wrong} from a layer above or beside it"


def test_no_import_circle() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circle = [*path[path.index(module) :], module]
            pytest.fail("import circle: " + " -> ".join(circle))
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_the_check_sees_a_wrong_way_import(tmp_path: Path) -> None:
    # The reader itself: an import inside a function counts, one under TYPE_CHECKING does not.
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from jobs import lake\n"
        "def f():\n    from local import demo\n"
    )
    assert list(imported(source, KNOWN)) == ["local", "local.demo"]


def uncommented_local_imports(path: Path) -> Iterator[str]:
    """Imports inside functions with no comment saying why: on the line, or above it among the
    function's other imports (an import needs a reason to wait until the function runs)."""
    lines = path.read_text().splitlines()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for statement in ast.walk(node):
            if not isinstance(statement, ast.Import | ast.ImportFrom):
                continue
            above = statement.lineno - 1  # 0-based index of the import's line
            while above > 0 and _import_or_comment(lines[above - 1]):
                above -= 1
            block = lines[above : statement.lineno]
            if not any("#" in line for line in block):
                where = f"{path.relative_to(ROOT)}:{statement.lineno}"
                yield f"{where}: {lines[statement.lineno - 1].strip()}"


def _import_or_comment(line: str) -> bool:
    text = line.strip()
    return not text or text.startswith(("import ", "from ", "#"))


def test_every_import_inside_a_function_says_why() -> None:
    found = [line for path in KNOWN.values() for line in uncommented_local_imports(path)]
    assert not found, "imports inside functions without a comment saying why:\n" + "\n".join(found)
