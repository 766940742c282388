"""The README's two newcomer commands stay true: CI runs exactly the test command it shows."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [b for b in _bash_blocks(readme) if "pytest" in b]
    assert len(commands) == 1, "one test command in the README"
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci_lines[-1].strip() == commands[0]


def test_readme_main_command_sets_up_and_trains_with_defaults():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    main = blocks[0]
    assert "pip install torch==2.13.0" in main and main.rstrip().endswith("tripletnet train")


def test_readme_options_table_lists_every_option_with_its_default_and_preset_value():
    from dataclasses import fields

    from tripletnet.config import PRESETS, TrainConfig

    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\| `--(\w+)` \| `([^`]*)` \| `?([^`|]*)`? \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3).strip(), match.group(4))
    for f in fields(TrainConfig):
        assert f.name in rows, f"README options table lacks --{f.name}"
        default, preset, meaning = rows[f.name]
        assert default == str(f.default), f.name
        assert meaning == f.metadata["help"].replace("%%", "%"), f"README and --help disagree on --{f.name}"
        assert preset == (str(PRESETS["reference"][f.name]) if f.name in PRESETS["reference"] else ""), f.name


def test_the_readme_training_example_runs_without_a_collapse_warning(tmp_path, monkeypatch, capsys):
    from _mnist import data_root, require_dataset

    require_dataset("mnist")
    monkeypatch.setenv("TRIPLETNET_DATA", data_root())
    monkeypatch.chdir(tmp_path)
    readme = (ROOT / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "tripletnet.training" in b]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 - running the documented example is the test
    assert len(namespace["result"].history) == 2 and (tmp_path / "runs" / "try" / "last.pt").is_file()
    err = capsys.readouterr().err
    assert "COLLAPS" not in err.upper(), err


def test_the_reliability_table_quotes_the_counts_the_tests_use():
    import test_fuzz_readers
    import test_reliability

    page = (ROOT / "docs" / "guide" / "reliability.md").read_text()
    assert f"at each of {len(test_reliability.KILL_MOMENTS)} named moments of a save" in page
    fuzz = test_fuzz_readers.EXAMPLES
    counts = ", ".join(str(fuzz[reader]) for reader in ("idx", "image", "csv", "pairs", "toml"))
    assert f"({counts} inputs)" in page
