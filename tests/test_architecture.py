"""The shape of the code: no import circles, rooms of one purpose, checked types, thin views.

These read the source (no Django, no TensorFlow) so they fail in seconds when a change breaks the
layering that `lint-imports` and mypy also check in CI.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("grading", "mlcore", "bench")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_TYPE_IGNORES = 20


def _sources(*packages: str) -> Iterator[Path]:
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name an import statement of the module names, at any depth (imports inside
    functions hide a circle from Python, not from a reader)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            yield from (f"{base}.{alias.name}" if base else alias.name for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in _sources(*PACKAGES)}

    def resolve(name: str) -> str | None:
        while name:
            if name in files:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {module: set() for module in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            target = resolve(name)
            # A package's __init__ names its public API: importing through it is an edge to the
            # module that defines the name, not a way back into the package.
            if target and target != module and files[target].name != "__init__.py":
                graph[module].add(target)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    circles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_the_circle_finder_finds_a_circle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from grading.services import jobs\n")
    assert list(_imported_names(tree, "grading.celery", False)) == ["grading.services.jobs"]


def test_there_is_no_import_circle_among_the_projects_modules() -> None:
    circles = import_circles(import_graph())
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_module_is_over_600_lines() -> None:
    long_modules = {
        str(path.relative_to(REPO)): lines
        for path in _sources("grading", "mlcore")
        if (lines := path.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES
    }
    assert long_modules == {}


def test_no_function_is_over_80_lines() -> None:
    long_functions = {}
    for path in _sources("grading", "mlcore"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions[f"{path.relative_to(REPO)}:{node.name}"] = lines
    assert long_functions == {}


TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<reason>.*)$")


def test_type_ignores_are_few_and_each_names_its_code_and_reason() -> None:
    ignores = []
    for path in _sources(*PACKAGES):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if match := TYPE_IGNORE.search(line):
                ignores.append((f"{path.relative_to(REPO)}:{number}", match))
    without_reason = [
        where
        for where, match in ignores
        if not match["codes"] or not match["reason"].strip().lstrip("#").strip()
    ]
    assert without_reason == [], "a type: ignore needs [code] and a reason after it"
    assert len(ignores) <= MAX_TYPE_IGNORES, [where for where, _ in ignores]


VIEW_WRITES = re.compile(
    r"\btransaction\.atomic\b|\.save\(|\.delete\(|\.objects\.(create|bulk_create|update|"
    r"get_or_create|update_or_create)\("
)


@pytest.mark.parametrize("path", sorted((REPO / "grading" / "views").glob("*.py")), ids=str)
def test_views_write_only_through_services(path: Path) -> None:
    writes = [
        f"{path.name}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if VIEW_WRITES.search(line)
    ]
    assert writes == []
