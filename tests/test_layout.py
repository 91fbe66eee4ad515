"""The package's import rules (docs/layout.md): no cycle among its modules, imports inside functions included; the
library never imports the recipes; no private name crosses a module boundary."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_transfer"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) of every import in the file, at any depth, relative ones made absolute."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names, _ in imports(path):
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                while candidate and candidate not in MODULES:
                    candidate = candidate.rpartition(".")[0]
                # A module importing its own package (for a constant of the package's __init__) is no cycle.
                if candidate and candidate != module and not module.startswith(candidate + "."):
                    graph[module].add(candidate)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_check_finds_a_cycle_through_an_import_inside_a_function():
    graph = import_graph()
    graph["hf_transfer.errors"].add("hf_transfer.run.launch")  # what `run_cli` living in errors.py once did
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and "hf_transfer.errors" in cycle


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_library_never_imports_recipes_nor_private_names(module):
    for target, names, line in imports(MODULES[module]):
        assert target.split(".")[0] != "recipes", f"{module}:{line} imports {target}"
        if target.startswith("hf_transfer"):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{module}:{line} imports private {private} from {target}"
