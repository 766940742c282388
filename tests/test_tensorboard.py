"""--tensorboard: the event files hold metrics.jsonl's numbers, and the projector gets every evaluation image."""

import builtins
import json

import pytest

from tripletnet.cli import main
from tripletnet.config import TrainConfig
from tripletnet.training import train
from tripletnet.training.tensorboard import scalars_of

from _mnist import data_root, mnist_slice

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

EVAL_IMAGES = 300


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch of a few steps with --tensorboard; returns (run folder, TensorBoard folder)."""
    root = tmp_path_factory.mktemp("tensorboard")
    config = TrainConfig(num_images=128, batch_size=64, epochs=1, eval_every=1, eval_images=EVAL_IMAGES,
                         checkpoint_path=str(root / "run"), tensorboard=str(root / "tb"), data_path=data_root(),
                         precision="fp32", augment=False, num_val_triplets=16)
    train(config, data=mnist_slice(n_train=512, n_test=EVAL_IMAGES), log=lambda _: None)
    return root / "run", root / "tb"


def test_event_scalars_equal_the_metrics_jsonl_record(tiny_run):
    run_dir, board = tiny_run
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    events = event_accumulator.EventAccumulator(str(board), size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    expected = scalars_of(record)
    # The figures the brief names are among them, not left out by the number filter.
    assert {"train_loss", "val_loss", "val", "precision_at_1", "lr", "epoch_seconds"} <= expected.keys()
    assert set(events.Tags()["scalars"]) == set(expected)
    for key, value in expected.items():
        (scalar,) = events.Scalars(key)
        assert scalar.step == record["epoch"]
        assert scalar.value == pytest.approx(value, rel=1e-6, abs=1e-12)  # event files store float32


def test_projector_has_one_row_per_evaluation_image_with_labels_and_sprite(tiny_run):
    _, board = tiny_run
    config = (board / "projector_config.pbtxt").read_text()
    (tensors,) = board.rglob("tensors.tsv")  # <step>/<tag>/tensors.tsv
    folder = tensors.parent
    rows = (folder / "tensors.tsv").read_text().splitlines()
    labels = (folder / "metadata.tsv").read_text().splitlines()
    assert len(rows) == EVAL_IMAGES and all(len(row.split("\t")) == 64 for row in rows)
    assert len(labels) == EVAL_IMAGES
    assert set(labels) <= {str(d) for d in range(10)}
    assert (folder / "sprite.png").is_file()
    assert f'image_path: "{folder.relative_to(board).as_posix()}/sprite.png"' in config


def test_missing_tensorboard_is_one_line_and_exit_2_before_training(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    code = main(["train", "--checkpoint-path", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb"), "--epochs", "1",
                 "--data-path", data_root()])
    assert code == 2
    (message,) = capsys.readouterr().err.strip().splitlines()
    assert message.endswith('--tensorboard needs the tensorboard package: pip install "tripletnet[tensorboard]"')
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()
