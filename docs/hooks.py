"""mkdocs hook: the parameters reference page (params.md), generated at build time from the params schema that
asrflow validates params.yaml against (`asrflow.config`), so the page cannot drift from what a run accepts; and
CONTRIBUTING.md (at the repository's root, where people look for it) as the site's contributing.md.

Every key gets its type, whether it is required, its default, the values allowed and its description, and which
stages read it (from the stage table, asrflow.stages: a stage re-runs when a key it reads changes).

`python docs/hooks.py` prints the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = "params.md"
CONTRIBUTING_PAGE = "contributing.md"
COLUMNS = ("key", "type", "required", "default", "allowed", "description", "read by")

INTRO = """# Parameters reference

Every key `params.yaml` may hold, generated from the schema asrflow validates it against when any stage starts
(an unknown key or a bad value stops the run, naming the key and what is allowed). *Read by* lists the stages that
read a key: changing it re-runs those stages and what follows them, in either engine
([Engines & re-runs](engines.md)). A key with a default may be left out.

A method's training settings (`train.<method>`) take every key of the shared training loop too: a key set there
overrides the `train.*` one for that method only.
"""


def schema() -> dict[str, Any]:
    """The params schema as asrflow loads it (the public name if the package has one, else `_schema`)."""
    from asrflow import config

    load = getattr(config, "schema", None) or getattr(config, "load_schema", None) or config._schema
    return load()


def readers() -> list[tuple[str, tuple[str, ...]]]:
    """(stage, params keys it reads) from the stage table; [] if the package has none."""
    try:
        from asrflow.stages import STAGES
    except ImportError:
        return []
    return [(s.name, tuple(s.params)) for s in STAGES]


def read_by(key: str, table: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Stages that read `key`, part of it, or a section holding it (`train.{method}` stands for every method)."""
    parts = key.split(".")

    def covers(declared: str) -> bool:
        theirs = declared.split(".")
        common = min(len(parts), len(theirs))
        return all(
            a == b or "{" in b or a.startswith("<") for a, b in zip(parts[:common], theirs[:common], strict=True)
        )

    return [name for name, keys in table if any(covers(k) for k in keys)]


def _code(value: Any) -> str:
    """A value as params.yaml would hold it, in a code span."""
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value, ensure_ascii=False)}`"


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """`node` with the properties and required keys of a `$ref: #/$defs/<name>` it points to merged in."""
    ref = node.get("$ref", "")
    if not ref.startswith("#/$defs/"):
        return node
    target = root["$defs"][ref.rsplit("/", 1)[-1]]
    return {
        **target,
        **node,
        "properties": {**target.get("properties", {}), **node.get("properties", {})},
        "required": [*target.get("required", []), *node.get("required", [])],
    }


def type_of(node: dict[str, Any]) -> str:
    if "oneOf" in node:
        return " or ".join(dict.fromkeys(type_of(alternative) for alternative in node["oneOf"]))
    if "enum" in node:
        kinds = {type(value).__name__ for value in node["enum"]}
        return (
            {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(kinds.pop(), "value")
            if len(kinds) == 1
            else "value"
        )
    kinds = node.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    names = []
    for kind in kinds:
        if kind == "array" and "items" in node:
            names.append(f"list of {type_of(node['items'])}s".replace("ss", "s"))
        elif kind == "null":
            names.append("null")
        else:
            names.append(kind)
    return " or ".join(names)


def allowed(node: dict[str, Any], separator: str = "; ") -> str:
    """The values the schema allows, in words."""
    if "oneOf" in node:
        return " or ".join(a for a in (allowed(alternative, ", ") for alternative in node["oneOf"]) if a)
    rules = []
    if "enum" in node:
        rules.append(" ".join(_code(v) for v in node["enum"]))
    for word, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if word in node:
            rules.append(f"{sign} {node[word]:g}")
    if "pattern" in node:
        rules.append(f"matches `{node['pattern']}`")
    if node.get("minLength"):
        rules.append("not empty")
    if "not" in node and "const" in node["not"]:
        rules.append(f"not {node['not']['const']:g}")
    if "minItems" in node or "maxItems" in node:
        low, high = node.get("minItems"), node.get("maxItems")
        rules.append(
            f"{low} items"
            if low == high
            else f"{low}–{high} items"
            if low and high
            else f"at least {low} item{'s' * (low != 1)}"
            if low
            else f"at most {high} items"
        )
    if node.get("uniqueItems"):
        rules.append("no repeats")
    if node.get("minProperties"):
        rules.append(f"at least {node['minProperties']} key{'s' * (node['minProperties'] != 1)}")
    if "items" in node:
        inner = allowed(node["items"], ", ")
        if inner:
            rules.append(f"each item: {inner}")
    return separator.join(rules)


def _ref_name(node: dict[str, Any]) -> str:
    ref = node.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/$defs/") else ""


def rows(
    node: dict[str, Any], key: str, required: bool, root: dict[str, Any], table: list[tuple[str, tuple[str, ...]]]
) -> list[dict[str, str]]:
    """One row for `key` and one for each key below it. Siblings that share a `$ref: #/$defs/<name>` (the methods
    under train) get the definition's keys once, as `<parent>.<name>.*`, then only their own."""
    own = node
    node = _resolve(node, root)
    description = " ".join(str(node.get("description", "")).split())
    read = ", ".join(read_by(key, table)) or "engines only (no stage)"
    out = [
        {
            "key": key,
            "type": type_of(node),
            "required": "yes" if required else "",
            "default": _code(node["default"]) if "default" in node else "",
            "allowed": allowed(node),
            "description": description,
            "read by": read,
        }
    ]
    wanted = set(node.get("required", []))
    shown: set[str] = set()
    for name, child in node.get("properties", {}).items():
        definition = _ref_name(child)
        if definition and definition not in shown:
            shown.add(definition)
            out += rows(root["$defs"][definition], f"{key}.<{definition}>", False, root, table)
        if definition:
            # The child's own keys only: the definition's were listed above.
            keys = {k: v for k, v in child.get("properties", {}).items()}
            merged = _resolve(child, root)
            out.append(
                {
                    "key": f"{key}.{name}",
                    "type": type_of(merged),
                    "required": "yes" if name in wanted else "",
                    "default": _code(child["default"]) if "default" in child else "",
                    "allowed": "",
                    "description": f"`{key}.<{definition}>` settings of {name}" + (", and:" if keys else ""),
                    "read by": ", ".join(read_by(f"{key}.{name}", table)) or "engines only (no stage)",
                }
            )
            for sub, grandchild in keys.items():
                out += rows(grandchild, f"{key}.{name}.{sub}", sub in merged.get("required", []), root, table)
        else:
            out += rows(child, f"{key}.{name}", name in wanted, root, table)
    extra = own.get("additionalProperties")
    if isinstance(extra, dict):
        out += rows(extra, f"{key}.<key>", False, root, table)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def page(root: dict[str, Any] | None = None) -> str:
    """The reference page: one section per top-level key, one table row per key below it."""
    root = root if root is not None else schema()
    table = readers()
    wanted = set(root.get("required", []))
    lines = [INTRO]
    for name, node in root["properties"].items():
        section = rows(node, name, name in wanted, root, table)
        head = section[0]
        lines += ["", f"## `{name}`", ""]
        lines.append(
            " ".join(
                part
                for part in (
                    head["description"] and head["description"][0].upper() + head["description"][1:].rstrip(".") + ".",
                    f"Type: {head['type']}." if not node.get("properties") else "",
                    "Required." if head["required"] else "Optional.",
                    f"Allowed: {head['allowed']}." if head["allowed"] else "",
                    f"Default: {head['default']}." if head["default"] else "",
                    f"Read by: {head['read by']}." if head["read by"] else "",
                )
                if part
            )
        )
        if len(section) > 1:
            lines += ["", "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
            lines += [
                f"| `{row['key']}` | " + " | ".join(_cell(row[c]) for c in COLUMNS[1:]) + " |" for row in section[1:]
            ]
    return "\n".join(lines) + "\n"


def all_keys(root: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Every key's row (for tests: each has a description)."""
    root = root if root is not None else schema()
    wanted = set(root.get("required", []))
    return [
        row for name, node in root["properties"].items() for row in rows(node, name, name in wanted, root, readers())
    ]


def contributing(root: Path = ROOT) -> str:
    """CONTRIBUTING.md as a page of the site: its links into docs/ made relative to the site's pages."""
    text = (root / "CONTRIBUTING.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)


def on_files(files, config):  # noqa: ANN001 - mkdocs hook signature
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=page()))
    files.append(File.generated(config, CONTRIBUTING_PAGE, content=contributing()))
    return files


if __name__ == "__main__":
    print(page(), end="")
