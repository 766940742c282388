"""Every shell command of the README runs, as a newcomer following it would run it.

The commands come from the README's ```bash blocks, in order, run in one empty folder (the
"repository root" of the tour), with MNIST read from ``TRIPLETNET_DATA``. The rules, so that the
whole tour fits in a test:

* Set-up lines (``python3 -m venv ... && pip install ...``, the Install section) are not run.
* The two newcomer commands: their set-up part (``python3 -m venv ... && pip install ...``) is not
  run (the suite already runs inside such an environment); the main command's ``tripletnet train``
  runs; the test command is the suite itself (``tests/test_readme.py`` checks CI runs it verbatim).
* Long runs get tiny variants, options appended after the README's own (the last one wins):
  ``train`` (also under torchrun) gets ``TINY_TRAIN``; ``evaluate`` ``--no-clustering``; ``report``
  ``--test_images 200 --no-tsne``. Nothing else changes.
* What the README asks the reader to bring exists: ``a.png`` and ``b.png`` (MNIST test digits 0 and
  1, a 7 and a 2) and ``my_images/`` (20 training and 10 test digits per class, in
  ``train/<digit>/`` and ``test/<digit>/``).
* ``tripletnet`` commands run in this process through the CLI's ``main`` (the console script is
  ``tripletnet.__main__:run``, which only adds the imports and the exit), torchrun as a subprocess.

Each command must exit with 0, and each output the README shows after a command must start its
lines as the real output does (first words; the numbers of a tiny run differ, and so may a
same/different decision).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tripletnet.cli import main

from _mnist import data_root, mnist, require_dataset

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TINY_TRAIN = ["--epochs", "1", "--num_images", "256", "--batch_size", "64", "--eval_images", "200", "--num_val_triplets", "16",
              "--threads", "1", "--precision", "fp32"]
TINY = {"train": TINY_TRAIN, "evaluate": ["--no-clustering"], "report": ["--test_images", "200", "--no-tsne"]}
UNSAID_IN_TINY = {"report": {"t-SNE"}}  # lines of output a tiny variant turns off (--no-tsne)
DECISIONS = {"same:", "different:"}
SET_UP = ("pip ", "python3 -m venv", ". .venv")


def readme_commands() -> list[tuple[list[list[str]], str | None]]:
    """Each README ```bash block as the argv of its commands, with the output the README shows right after it (or None)."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"```bash\n(.*?)```(\s*```text\n(.*?)```)?", text, flags=re.S):
        commands = []
        for line in match.group(1).strip().splitlines():
            part = line.strip().split(" && ")[-1]  # the set-up before it is not run (see the module doc)
            if part and "pytest" not in part and not part.startswith(SET_UP):
                commands.append(shlex.split(part))
        if commands:
            found.append((commands, match.group(3)))
    return found


def _first_words(output: str) -> set[str]:
    words = {line.split()[0] for line in output.splitlines() if line.strip() and not line.startswith(" ")}
    return {"decision" if word in DECISIONS else word for word in words}


def _bring_what_the_readme_assumes(folder: Path) -> None:
    from PIL import Image

    full = mnist()
    Image.fromarray(full.test_images[0].squeeze().numpy()).save(folder / "a.png")
    Image.fromarray(full.test_images[1].squeeze().numpy()).save(folder / "b.png")
    for split, images, labels, count in (("train", full.train_images, full.train_labels, 20),
                                         ("test", full.test_images, full.test_labels, 10)):
        for digit in range(10):
            target = folder / "my_images" / split / str(digit)
            target.mkdir(parents=True)
            for n, index in enumerate((labels == digit).nonzero().flatten()[:count].tolist()):
                Image.fromarray(images[index].squeeze().numpy()).save(target / f"{n}.png")


def _tiny(argv: list[str]) -> list[str]:
    command = argv[argv.index("tripletnet") + 1] if "tripletnet" in argv else argv[1]
    return argv + TINY.get(command, [])


def test_the_readme_has_the_tour_commands():
    commands = [argv for block, _ in readme_commands() for argv in block]
    named = {argv[1] if argv[0] == "tripletnet" else argv[0] for argv in commands}
    assert {"train", "evaluate", "report", "verify", "index", "search", "export", "torchrun"} <= named


def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    require_dataset("mnist")
    monkeypatch.setenv("TRIPLETNET_DATA", data_root())
    monkeypatch.chdir(tmp_path)
    _bring_what_the_readme_assumes(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    for block, shown in readme_commands():
        printed = ""
        for argv in map(_tiny, block):
            if argv[0] == "tripletnet":
                capsys.readouterr()
                code = main(argv[1:])
                captured = capsys.readouterr()
                output, errors = captured.err + captured.out, captured.err
            elif argv[0] == "torchrun":
                done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1:]], env=env, capture_output=True,
                                      text=True, timeout=600)
                code, output, errors = done.returncode, done.stderr + done.stdout, done.stderr
                assert done.stdout.count("done: ") == 1, done.stdout  # the main process speaks for the run
            else:
                pytest.fail(f"the README shows a command this test does not know how to run: {shlex.join(argv)}")
            assert code == 0, f"{shlex.join(argv)} exited with {code}:\n{errors[-3000:]}"
            printed += output
        if shown is not None:
            unsaid = set().union(*(UNSAID_IN_TINY.get(argv[1], set()) for argv in block if argv[0] == "tripletnet"))
            missing = _first_words(shown) - _first_words(printed) - {"..."} - unsaid
            assert not missing, f"{block}: the README shows lines starting {sorted(missing)}, the run printed:\n{printed}"
