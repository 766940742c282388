"""examples/evaluate.ipynb runs top to bottom on a tiny checkpoint, and its table says what 'tripletnet evaluate' says."""

import json
import os
import re
from pathlib import Path

import pytest

import tripletnet
from tripletnet.cli import main
from tripletnet.config import TrainConfig
from tripletnet.training import train

from _mnist import mnist

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "evaluate.ipynb"
PER_CLASS = {"train": 30, "test": 20}


def _mnist_folder(root: Path) -> Path:
    """A few MNIST digits as PNG files in root/train/<digit>/ and root/test/<digit>/: a small test split keeps it fast."""
    from PIL import Image

    full = mnist()
    for split, images, labels in (("train", full.train_images, full.train_labels), ("test", full.test_images, full.test_labels)):
        for digit in range(10):
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for n, index in enumerate((labels == digit).nonzero().flatten()[: PER_CLASS[split]].tolist()):
                Image.fromarray(images[index].squeeze().numpy()).save(folder / f"{n}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A model trained for one short epoch on the folder (the numbers need not be good, only the same twice)."""
    root = tmp_path_factory.mktemp("notebook")
    data = _mnist_folder(root / "digits")
    config = TrainConfig(dataset=str(data), num_images=300, batch_size=60, epochs=1, eval_every=0,
                         checkpoint_path=str(root / "run"),
                         precision="fp32", augment=False, num_val_triplets=16)
    train(config, log=lambda _: None)
    return root / "run" / "last.pt"


def _table_value(text: str, row: str) -> str:
    match = re.search(rf"^  {re.escape(row)}\s+(\S+)", text, flags=re.MULTILINE)
    assert match, f"no {row!r} row in the notebook's table:\n{text}"
    return match.group(1)


def test_the_notebook_runs_and_its_table_matches_tripletnet_evaluate(checkpoint, monkeypatch, capsys):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.get("outputs") for cell in code_cells), "commit the notebook without outputs"
    monkeypatch.setenv("TRIPLETNET_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("TRIPLETNET_TSNE_IMAGES", "100")
    monkeypatch.delenv("TRIPLETNET_DATA", raising=False)  # the run's own folder, as evaluate uses it
    # The kernel imports the tripletnet under test (a worktree's src/ may come before the installed one).
    package_root = str(Path(tripletnet.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(checkpoint.parent)}})
    client.execute()

    texts = {}
    images = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", "".join(output.get("traceback", []))
            if output.output_type == "stream" and output.name == "stdout":
                texts[cell.source] = texts.get(cell.source, "") + output.text
            images += "image/png" in output.get("data", {})
    table = next(text for source, text in texts.items() if "format_table(result)" in source)
    assert images == 4  # distances, ROC, t-SNE, the verified pairs

    assert main(["evaluate", "--checkpoint", str(checkpoint), "--json", "--no-clustering"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert expected["n_pairs"] == 200 * 199 // 2
    assert _table_value(table, "VAL") == f"{expected['val']:.4f}"
    assert _table_value(table, "Threshold") == f"{expected['threshold']:.4f}"
    assert _table_value(table, "ROC AUC") == f"{expected['auc']:.6f}"
    pairs = next(text for source, text in texts.items() if "model.verify" in source)
    assert len(re.findall(r"^pair \d+ / \d+: distance [0-9.]+, (same|different)", pairs, flags=re.MULTILINE)) == 6


@pytest.mark.parametrize("started_in", [".", "examples"])
def test_without_a_setting_the_notebook_evaluates_the_run_the_readme_makes(tmp_path, monkeypatch, started_in):
    """`tripletnet train` from the repository root writes checkpoints/last.pt; Jupyter starts the notebook
    in the root or in examples/: either way its parameters cell finds that checkpoint."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(cell.source for cell in notebook.cells if cell.cell_type == "code" and "CHECKPOINT" in cell.source)
    written = tmp_path / "checkpoints" / "last.pt"
    written.parent.mkdir()
    written.write_bytes(b"")
    (tmp_path / "examples").mkdir()
    monkeypatch.chdir(tmp_path / started_in)
    monkeypatch.delenv("TRIPLETNET_CHECKPOINT", raising=False)
    namespace: dict = {}
    exec(compile(parameters, str(NOTEBOOK), "exec"), namespace)  # noqa: S102 - the notebook's own cell is the test
    assert Path(namespace["CHECKPOINT"]).resolve() == written.resolve()
