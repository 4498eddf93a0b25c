"""The layer rule of docs/architecture.md, checked on the code: every import (module level, function-local and
TYPE_CHECKING alike) goes to a lower layer or stays inside its own package, and no module imports itself back
through a cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"


def layers() -> dict[str, int]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("<!-- layers:begin")[1].split("<!-- layers:end -->")[0]
    found = {}
    for line in table.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*?)\|", line)
        if m:
            for module in re.findall(r"`([a-z_.]+)`", m.group(2)):
                found[module] = int(m.group(1))
    return found


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Every zoo module ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "zoo"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "zoo":
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:  # `from zoo import cache` imports the module zoo.cache
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def layer_of(module: str, table: dict[str, int]) -> tuple[str, int]:
    candidates = [name for name in table if module == name or module.startswith(name + ".")]
    assert candidates, f"{module} is in no layer of docs/architecture.md"
    owner = max(candidates, key=len)
    return owner, table[owner]


def test_every_module_is_in_a_layer_and_imports_only_downwards() -> None:
    table, known = layers(), modules()
    assert table, "the layer table of docs/architecture.md is missing"
    wrong = []
    for module, path in known.items():
        owner, level = layer_of(module, table)
        for target in imports(path, set(known)):
            target_owner, target_level = layer_of(target, table)
            if target_owner == owner:
                continue
            if target_level >= level:
                wrong.append(f"{module} (layer {level}) imports {target} (layer {target_level})")
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_cycles() -> None:
    known = modules()
    graph = {module: imports(path, set(known)) - {module} for module, path in known.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The walker finds function-local and TYPE_CHECKING imports (so the two tests above can fail)."""
    source = PACKAGE / "errors.py"
    assert imports(source, set(modules())) == set()
    sample = tmp_path / "_layer_sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from zoo import cache\n"
                      "def f():\n    import zoo.loader\n", encoding="utf-8")
    assert imports(sample, set(modules())) == {"zoo.cache", "zoo.loader"}
