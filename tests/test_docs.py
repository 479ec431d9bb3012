"""The README and the docs site: a one-page README whose every command works as written in a fresh shell, docs that
stand on their own, a parameters reference with every schema key described, and `mkdocs build --strict` passing."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
TOOLS = ("snakemake", "dvc", "asrflow")


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) of every line inside the ```bash blocks of `text`."""
    return [
        (block.start(1) + line.start(), line[0].strip())
        for block in re.finditer(r"```bash\n(.*?)```", text, re.S)
        for line in re.finditer(r".+", block[1])
    ]


def test_readme_is_one_page_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 8 * 1024, f"README.md is {len(text.encode())} bytes; the rest belongs in docs/"
    commands = [line for _, line in shell_lines(text)]
    assert commands[:2] == [
        "make demo      # sets up .venv (CPU torch from disk, then this package)"
        " and runs the demo to results/summary.csv",
        "make test      # the test suite (unit, methods, both engines end to end on a tiny config)",
    ]


def test_every_readme_command_runs_in_a_fresh_shell() -> None:
    """After `make demo`, snakemake, dvc and asrflow live in .venv: the README activates it before it shows any."""
    text = README.read_text(encoding="utf-8")
    lines = shell_lines(text)
    activate = next(offset for offset, line in lines if line.startswith("source .venv/bin/activate"))
    tool_lines = [(offset, line) for offset, line in lines if line.split()[0] in TOOLS]
    assert tool_lines, "the README shows what to run after make demo"
    assert all(offset > activate for offset, _ in tool_lines), "a tool shown before .venv is activated"


def test_docs_stand_on_their_own() -> None:
    """No design file outside the repository, no made-up links; every relative link of the README resolves."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for outside in ("DESIGN.md", "shared/", "example.invalid"):
            assert outside not in text, f"{page.name} cites {outside}"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (ROOT / target).is_file(), f"README links to {target}, which is not in the repository"


def test_every_schema_key_has_a_description_in_the_reference() -> None:
    module = hooks()
    rows = module.all_keys()
    assert not [row["key"] for row in rows if not row["description"]], "add a description: to these schema keys"
    page = module.page()
    for row in rows:
        assert f"`{row['key']}`" in page
    train = {row["key"]: row for row in rows}
    assert train["train.lora.r"]["default"] == "`8`" and "train" in train["train.lora.r"]["read by"]
    assert train["decode.lm_order"]["allowed"] == "≥ 2; ≤ 6" and train["decode.lm_order"]["required"] == "yes"
    assert "`full` `adapter` `lora` `frozen` `scratch`" in page


def test_license_agrees_with_the_package_metadata() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    """Every page in the nav, no broken link or anchor: what `make docs` and CI run."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "params" / "index.html").read_text(encoding="utf-8")
    assert "train.&lt;method&gt;.lr" in reference and (tmp_path / "contributing" / "index.html").is_file()
