"""The layering in DESIGN.md, enforced on the imports: reasoning proposes, execution disposes.

- ``agent/`` and ``profile/`` reason over values: they reach the system only through the
  execution port (``agent/port.py``), never by importing ``kernel/``, ``execution/``, the
  application layer, a front end, or a module that reads the system (psutil, subprocess).
- The front ends (``cli/``, ``daemon/``, ``mcp_server/``) are adapters over ``ops``/
  ``services``: they never import ``kernel/`` themselves.
- Only ``kernel/`` opens ``/proc`` or ``/sys``: any other module that holds a path there
  as a string (a literal, or the first part of an f-string) fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "schedagent").rglob("*.py"), *(ROOT / "mcp_server").rglob("*.py")])

REASONING = ("schedagent/agent/", "schedagent/profile/")
FRONT_ENDS = ("schedagent/cli/", "schedagent/daemon/", "mcp_server/")
REASONING_MAY_NOT = (
    "schedagent.kernel",
    "schedagent.execution",
    "schedagent.services",
    "schedagent.ops",
    "schedagent.cli",
    "schedagent.daemon",
    "mcp_server",
    "schedagent.bench.runner",
    "schedagent.bench.workload",
    "schedagent.sandbox",
    "psutil",
    "subprocess",
    "shutil",
)
FRONT_ENDS_MAY_NOT = ("schedagent.kernel",)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import, ``from X import y`` also as ``X.y``."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts)


def _forbidden(names: tuple[str, ...], imported: str) -> bool:
    return any(imported == n or imported.startswith(n + ".") for n in names)


def _violations(path: Path) -> list[str]:
    rel = _rel(path)
    tree = ast.parse(path.read_text(), filename=rel)
    rules = (
        REASONING_MAY_NOT
        if rel.startswith(REASONING)
        else FRONT_ENDS_MAY_NOT
        if rel.startswith(FRONT_ENDS)
        else ()
    )
    out = [
        f"{rel}:{line} imports {name}"
        for line, name in _imports(tree, _module(path))
        if _forbidden(rules, name)
    ]
    if not rel.startswith("schedagent/kernel/"):
        out += [f"{rel}:{line} names {text!r}" for line, text in _system_paths(tree)]
    return sorted(set(out))


def _system_paths(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals and f-string heads that start with /proc or /sys."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        head = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else node
        if (
            isinstance(head, ast.Constant)
            and isinstance(head.value, str)
            and id(head) not in docstrings
            and head.value.startswith(("/proc", "/sys"))
        ):
            found.append((node.lineno, head.value))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_module_keeps_to_its_layer(path: Path) -> None:
    assert _violations(path) == []


def test_the_rules_catch_what_they_are_for(tmp_path: Path) -> None:
    """Each rule fails on a module that breaks it (the checks can fail)."""
    fake_root = tmp_path
    cases = {
        "schedagent/agent/bad.py": "from schedagent.kernel import procstat\n",
        "schedagent/profile/bad.py": "import psutil\n",
        "schedagent/cli/bad.py": "from schedagent.kernel.partial import switch\n",
        "mcp_server/bad.py": "from ..schedagent.kernel import scx\n",
        "schedagent/bench/bad.py": 'def f(pid):\n    return open(f"/proc/{pid}/stat")\n',
        "schedagent/store2.py": 'X = "/sys/kernel/sched_ext/state"\n',
    }
    global ROOT
    saved = ROOT
    ROOT = fake_root
    try:
        for rel, text in cases.items():
            path = fake_root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            assert _violations(path), rel
        ok = fake_root / "schedagent/kernel/ok.py"
        ok.parent.mkdir(parents=True, exist_ok=True)
        ok.write_text('"""Reads /proc."""\nP = "/proc/self/stat"\nimport psutil\n')
        assert _violations(ok) == []
    finally:
        ROOT = saved
