"""The package's import graph: no cycle, counting the imports inside functions (one such import
once hid a cycle between the trainer and the stacked engine)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "agreebook"


def _graph():
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        here = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                graph[m] |= {t for t in [base] + [f"{base}.{a.name}" for a in node.names] if t in mods and t != m}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agreebook"):
                graph[m] |= {t for t in [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                             if t in mods and t != m}
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in mods and a.name != m}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = _graph()
    assert {"agreebook.train", "agreebook.prepare", "agreebook.member", "agreebook.engines.loop",
            "agreebook.engines.stacked", "agreebook.executors"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    # the engines know nothing of processes or clusters; the lifecycle knows no engine
    assert not graph["agreebook.engines.loop"] & {"agreebook.executors", "agreebook.train"}
    assert not graph["agreebook.engines.stacked"] & {"agreebook.executors", "agreebook.train"}
    assert not {m for m in graph["agreebook.member"] if m.startswith("agreebook.engines")}


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_architecture_has_its_optimiser_defaults_in_config():
    from agreebook.config import ARCH_DEFAULTS
    from agreebook.models import ARCHS
    assert set(ARCH_DEFAULTS) == set(ARCHS)
