"""The house rules of the package (DESIGN.md), checked on the source: no import cycle, no module importing another
module's underscore name, files under 500 lines, functions under 80 lines and internal helpers with at most 8
parameters, except where a comment at the definition argues the exception (``# size rule: <reason>``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "attrobust"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_HELPER_PARAMS = 8
EXCEPTION_MARK = "# size rule:"


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


MODULES = _modules()


def _target(module: str, is_pkg: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".")[: None if is_pkg else -1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports() -> list[tuple[str, str, str]]:
    """``(importing module, imported module, imported name)`` for every ``from attrobust... import name``."""
    out = []
    for module, (path, is_pkg) in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _target(module, is_pkg, node)
                if target and target.split(".")[0] == "attrobust":
                    out.extend((module, target, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                out.extend((module, a.name, "") for a in node.names if a.name.split(".")[0] == "attrobust")
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, target, name in _imports():
        dep = f"{target}.{name}" if f"{target}.{name}" in MODULES else target
        # a package's __init__ re-exporting its own submodules is not a dependency of those submodules on it
        if dep in MODULES and dep != module and not dep.startswith(module + "."):
            graph[module].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private(module: str, target: str, name: str) -> bool:
    if name.startswith("_") and not name.startswith("__"):
        return True
    segments = target.split(".")
    for i, seg in enumerate(segments[1:], 1):
        owner = ".".join(segments[:i])
        # attrobust._checks / _ranking / _registry are the shared kernels below every layer (DESIGN.md);
        # a package's private modules are its own
        if seg.startswith("_") and owner != "attrobust" and not (module + ".").startswith(owner + "."):
            return True
    return False


def test_no_module_imports_another_modules_private_name() -> None:
    bad = [f"{m} imports {t}.{n}" for m, t, n in _imports() if _private(m, t, n)]
    assert bad == []


def _marked(lines: list[str], node: ast.AST) -> bool:
    first = node.lineno - 1 - len(getattr(node, "decorator_list", []))
    head = lines[max(first - 2, 0) : node.body[0].lineno + 1]
    return any(EXCEPTION_MARK in line and line.split(EXCEPTION_MARK, 1)[1].strip() for line in head)


def test_files_are_short() -> None:
    long = {}
    for path, _ in MODULES.values():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_FILE_LINES and not any(EXCEPTION_MARK in line for line in lines[:30]):
            long[str(path.relative_to(SRC))] = len(lines)
    assert long == {}


def _functions() -> list[tuple[Path, list[str], ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for path, _ in MODULES.values():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append((path, lines, node))
    return out


def test_functions_are_short() -> None:
    long = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, lines, node in _functions()
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and not _marked(lines, node)
    ]
    assert long == []


def test_internal_helpers_take_few_parameters() -> None:
    many = []
    for path, lines, node in _functions():
        a = node.args
        names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
        count = len([n for n in names if n not in ("self", "cls")]) + bool(a.vararg) + bool(a.kwarg)
        private = node.name.startswith("_") and not node.name.startswith("__")
        if private and count > MAX_HELPER_PARAMS and not _marked(lines, node):
            many.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({count} parameters)")
    assert many == []


@pytest.mark.parametrize("rule", ["file", "function"])
def test_checker_sees_a_violation(tmp_path: Path, rule: str) -> None:
    """The length rules are not vacuous: a long function in a parsed file is counted."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    tree = ast.parse(f"def f():\n{body}\n")
    node = tree.body[0]
    assert node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    assert not _marked(f"def f():\n{body}\n".splitlines(), node)
