"""The README stays short, true and newcomer-shaped: CI runs exactly the test command it shows, its
results table is the Results page's, and the checks that moved with the figures to the docs pages
(reliability counts, the training example) read those pages."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NUMBER = re.compile(r"\d+\.\d+")


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    readme = README.read_text()
    commands = [b for b in _bash_blocks(readme) if "pytest" in b]
    assert len(commands) == 1, "one test command in the README"
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci_lines[-1].strip() == commands[0]


def test_readme_main_command_sets_up_and_trains_with_defaults():
    blocks = _bash_blocks(README.read_text())
    (main,) = [block for block in blocks if block.rstrip().endswith("&& tripletnet train")]
    assert "pip install torch==2.13.0" in main and blocks.index(main) < [i for i, b in enumerate(blocks) if "pytest" in b][0]


def test_the_readme_is_short_and_speaks_of_the_readers_machine():
    readme = README.read_text()
    assert len(readme.splitlines()) <= 250
    for stale in ("this machine", "earlier machine", "issue 1", "runs/mnist/last.pt", 'pip install "tripletnet['):
        assert stale not in readme, stale
    # The checkpoints the README's commands read are the ones its training commands write.
    commands = "\n".join(_bash_blocks(readme))
    written = {"checkpoints"} | {folder.rstrip("/") for folder in re.findall(r"train .*--checkpoint_path (\S+)", commands)}
    read = {folder for folder in re.findall(r"--checkpoint (\S+)/last\.pt", commands)}
    read |= set(re.findall(r"--run (\S+)", commands))
    assert read and read <= written, f"the README reads runs no command of it writes: {sorted(read - written)}"
    assert "`./checkpoints/`" in readme  # and it says where training writes by default
    for tour in ("**Train**", "**Evaluate**", "**Report**", "**Verify**", "**Search**", "**Export**", "**Your own folder**",
                 "**Open set**", "**Several processes**"):
        assert tour in readme, tour


def test_the_readme_results_table_is_on_the_results_page():
    readme = README.read_text()
    section = readme[readme.index("\n## Results"):readme.index("\n## Documentation")]
    mnist = section[:section.index("glyph benchmark")]
    rows = [line for line in mnist.splitlines() if line.startswith("| ") and not line.startswith("| MNIST")]
    results = (ROOT / "docs" / "results" / "index.md").read_text()
    figures = [number for row in rows for number in NUMBER.findall(row)]
    assert len(figures) >= 12
    for number in figures:
        assert number in results, f"{number} of the README's results table is not on docs/results/index.md"
    assert "0.9875" not in section  # the unresolvable 1024-pair VAL is no headline


def test_the_readme_glyph_figures_are_the_glyph_page_s_and_those_come_from_the_committed_report():
    readme = README.read_text()
    section = readme[readme.index("glyph benchmark](docs/results/glyphs.md): 500"):readme.index("\n## Documentation")]
    readme_figures = [n for line in section.splitlines() if line.startswith("| split") for n in NUMBER.findall(line)]
    page = (ROOT / "docs" / "results" / "glyphs.md").read_text()
    assert len(readme_figures) >= 12 and all(n in page for n in readme_figures)
    report = (ROOT / "benchmarks" / "RESULTS-glyphs.md").read_text()
    measured = {f"{float(n):.3f}" for n in re.findall(r"\b[01]\.\d{4}\b", report)}
    table = page[page.index("| tripletnet defaults"):page.index("\n\n", page.index("| tripletnet defaults"))]
    page_figures = re.findall(r"\b[01]\.\d{3}\b", table)
    assert len(page_figures) >= 30
    missing = [n for n in page_figures if n not in measured]
    assert not missing, f"figures on docs/results/glyphs.md that benchmarks/RESULTS-glyphs.md does not hold: {missing}"


def test_the_documented_training_example_runs_without_a_collapse_warning(tmp_path, monkeypatch, capsys):
    from _mnist import data_root, require_dataset

    require_dataset("mnist")
    monkeypatch.setenv("TRIPLETNET_DATA", data_root())
    monkeypatch.chdir(tmp_path)
    page = (ROOT / "docs" / "guide" / "training.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "tripletnet.training" in b]
    namespace: dict = {}
    exec(compile(example, "training.md", "exec"), namespace)  # noqa: S102 - running the documented example is the test
    assert len(namespace["result"].history) == 2 and (tmp_path / "runs" / "try" / "last.pt").is_file()
    err = capsys.readouterr().err
    assert "COLLAPS" not in err.upper() and "shrank" not in err, err


def test_the_reliability_table_quotes_the_counts_the_tests_use():
    import test_fuzz_readers
    import test_reliability

    page = (ROOT / "docs" / "guide" / "reliability.md").read_text()
    assert f"at each of {len(test_reliability.KILL_MOMENTS)} named moments of a save" in page
    fuzz = test_fuzz_readers.EXAMPLES
    counts = ", ".join(str(fuzz[reader]) for reader in ("idx", "image", "csv", "pairs", "toml"))
    assert f"({counts} inputs)" in page


def test_train_sh_reads_the_data_from_tripletnet_data(tmp_path):
    """train.sh is the reference line with its defaults spelled out, but it must not pin --data_path:
    with --no-download it can only succeed by reading $TRIPLETNET_DATA."""
    from _mnist import data_root, require_dataset

    require_dataset("mnist")
    if not shutil.which("tripletnet"):
        pytest.skip("the tripletnet command is not on PATH (install the package)")
    env = {**os.environ, "TRIPLETNET_DATA": data_root(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(["bash", str(ROOT / "train.sh"), "--epochs", "1", "--num_images", "256", "--batch_size", "64",
                           "--eval_every", "0", "--num_val_triplets", "16", "--threads", "1", "--precision", "fp32",
                           "--no-download"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and not (tmp_path / "data").exists()
