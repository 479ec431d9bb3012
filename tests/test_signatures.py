"""No function in asrflow takes more than five positional parameters: past the first few, a call reads only when each
argument is named, so the rest are keyword-only (`*,`), or travel as a small dataclass when they always go together."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "asrflow"
MOST_POSITIONAL = 5


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_static(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)


def positional_count(function: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> int:
    """Positional-only and ordinary parameters; a method's first one (self or cls) is not counted."""
    count = len(function.args.posonlyargs) + len(function.args.args)
    return count - 1 if in_class and not is_static(function) and count else count


def functions(node: ast.AST, prefix: str = "", in_class: bool = False) -> Iterator[tuple[str, int]]:
    """(qualname, positional parameters) of every function under `node`, nested ones and methods included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            yield from functions(child, f"{prefix}{child.name}.", in_class=True)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{child.name}", positional_count(child, in_class)
            yield from functions(child, f"{prefix}{child.name}.<locals>.")
        else:
            yield from functions(child, prefix, in_class)


def too_many() -> dict[str, int]:
    """module:qualname → positional parameters, of every function over the limit."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for qualname, count in functions(tree):
            if count > MOST_POSITIONAL:
                found[f"{module_name(path)}:{qualname}"] = count
    return found


def test_no_function_takes_more_than_five_positional_parameters() -> None:
    offenders = sorted(too_many().items())
    assert not offenders, (
        f"more than {MOST_POSITIONAL} positional parameters (make the rest keyword-only, or group the ones that "
        "travel together in a dataclass): " + ", ".join(f"{name} ({count})" for name, count in offenders)
    )


def test_the_count_leaves_out_self_and_keyword_only_parameters() -> None:
    tree = ast.parse(
        "class A:\n"
        "    def method(self, a, b, c, d, e): ...\n"
        "    @staticmethod\n"
        "    def static(a, b, c, d, e, f): ...\n"
        "def function(a, b, /, c, d, e, *, f, g): ...\n"
        "def outer():\n"
        "    def inner(a, b, c, d, e, f, *rest, **named): ...\n"
    )
    assert dict(functions(tree)) == {
        "A.method": 5,
        "A.static": 6,
        "function": 5,
        "outer": 0,
        "outer.<locals>.inner": 6,
    }
