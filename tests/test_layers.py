"""Imports point one way: down the layers, never back, and no cycle of more than two modules.

Read from the source (every ``import`` statement, those inside functions and
under ``TYPE_CHECKING`` included), so that a lazy import cannot hide an
upward dependency. The layers, top to bottom; groups on one line may import
each other:

    the package root (lazy exports)
    faces: cli, demo, dashboard, django, webhooks, testing, __main__
    tasks
    client, api
    celery_app                      the process's Celery app, which client publishes through
    produce
    deliver
    reconcile
    mailtrap, serving
    metrics
    store
    core, settings                  settings checks URLs, sandbox ids and addresses with the core
    errors, records, version
"""

from __future__ import annotations

import ast
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import mailqueue

PACKAGE = Path(mailqueue.__file__).parent

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({""}),
    frozenset({"cli", "demo", "dashboard", "django", "webhooks", "testing", "__main__"}),
    frozenset({"tasks"}),
    frozenset({"client", "api"}),
    frozenset({"celery_app"}),
    frozenset({"produce"}),
    frozenset({"deliver"}),
    frozenset({"reconcile"}),
    frozenset({"mailtrap", "serving"}),
    frozenset({"metrics"}),
    frozenset({"store"}),
    frozenset({"core", "settings"}),
    frozenset({"errors", "records", "version"}),
)

def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its source."""
    modules = {module_name(path, root): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else base)
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
                    graph.setdefault(target, set())
    return dict(graph)


def layer_of(module: str, root_name: str) -> int:
    group = module.removeprefix(root_name).lstrip(".").split(".")[0]
    for index, layer in enumerate(LAYERS):
        if group in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add its group to LAYERS")


def upward_imports(graph: Mapping[str, Iterable[str]], root_name: str) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target, root_name) < layer_of(module, root_name):
                found.append(f"{module} -> {target}")
    return found


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_points_down_the_layers() -> None:
    assert upward_imports(import_graph(PACKAGE), "mailqueue") == []


def test_no_import_cycle_spans_more_than_two_modules() -> None:
    assert [cycle for cycle in cycles(import_graph(PACKAGE)) if len(cycle) > 2] == []


def test_at_most_twenty_modules_sit_at_the_top() -> None:
    assert len(list(PACKAGE.glob("*.py"))) <= 20


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "mailqueue"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.js"))
    return copy


def test_an_upward_import_inside_a_function_is_caught(package_copy: Path) -> None:
    planted = package_copy / "core" / "payload.py"
    planted.write_text(
        planted.read_text() + "\n\ndef _planted() -> None:\n    from mailqueue import client\n"
    )
    assert upward_imports(import_graph(package_copy), "mailqueue") == [
        "mailqueue.core.payload -> mailqueue.client"
    ]


def test_a_relative_upward_import_is_caught(package_copy: Path) -> None:
    planted = package_copy / "store" / "keys.py"
    planted.write_text(planted.read_text() + "\nfrom ..deliver import drain  # noqa\n")
    assert "mailqueue.store.keys -> mailqueue.deliver.drain" in upward_imports(
        import_graph(package_copy), "mailqueue"
    )


def test_a_cycle_of_three_modules_is_caught(package_copy: Path) -> None:
    for source, target in (("urls", "schedule"), ("schedule", "backoff"), ("backoff", "urls")):
        path = package_copy / "core" / f"{source}.py"
        planted = f"\n\ndef _planted() -> None:\n    from mailqueue.core import {target}\n"
        path.write_text(path.read_text() + planted)
    found = [set(cycle) for cycle in cycles(import_graph(package_copy)) if len(cycle) > 2]
    assert {"mailqueue.core.urls", "mailqueue.core.schedule", "mailqueue.core.backoff"} in found
