"""The documentation site builds without a warning, and its generated options reference is the config.

``mkdocs build --strict`` fails on a broken link, a missing page, a bad snippet include or a
docstring mkdocstrings cannot read; the options tables are rendered by docs/hooks.py from the same
config fields the CLI is built from.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tripletnet.config import PRESETS, EvalConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings")


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    mkdocs = [shutil.which("mkdocs") or "", "build"] if shutil.which("mkdocs") else [sys.executable, "-m", "mkdocs", "build"]
    done = subprocess.run([*mkdocs, "--strict", "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0 and not warnings, done.stderr[-4000:]
    return out


def test_the_site_builds_strictly_with_every_page(site):
    for page in ("index.html", "getting-started/index.html", "guide/data/index.html", "guide/reliability/index.html",
                 "results/index.html", "results/speed/index.html", "reference/options/index.html",
                 "reference/api/index.html", "contributing/index.html", "results/reports/results/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "load_model" in api and "TrainConfig" in api  # mkdocstrings rendered the docstrings
    contributing = (site / "contributing" / "index.html").read_text(encoding="utf-8")
    assert "Where things live" in contributing  # the snippet include of CONTRIBUTING.md


def test_the_built_options_reference_lists_every_config_field(site):
    page = (site / "reference" / "options" / "index.html").read_text(encoding="utf-8")
    for config_class in (TrainConfig, EvalConfig):
        for f in fields(config_class):
            assert f"<code>--{f.name}</code>" in page, f"--{f.name} missing from the built options reference"


def test_the_generated_tables_give_each_field_its_default_preset_value_and_long_help():
    hooks = _hooks()
    train, evaluate = hooks.options_table("train"), hooks.options_table("eval")
    rows = {re.match(r"\| `--(\w+)`", line).group(1): line for line in train.splitlines() if line.startswith("| `--")}
    for f in fields(TrainConfig):
        row = rows[f.name]
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[1] == ("none" if f.default in (None, "") else f"`{f.default}`"), f.name
        assert cells[2] == (f"`{PRESETS['reference'][f.name]}`" if f.name in PRESETS["reference"] else ""), f.name
        meaning = f.metadata.get("doc", f.metadata["help"]).replace("%%", "%").replace("|", "\\|")
        assert cells[3] == meaning, f.name
    for f in fields(EvalConfig):
        assert f"| `--{f.name}` |" in evaluate
    page = hooks.on_page_markdown("before\n<!-- options: eval -->\nafter")
    assert "<!-- options" not in page and "| `--far` |" in page
