"""--selection_classes and --patience: choosing the best epoch on training classes kept out of
training (never on the test classes), best.pt, early stopping, and the refusals."""

import json

import pytest
import torch

from tripletnet.cli import main
from tripletnet.config import TrainConfig
from tripletnet.errors import ParameterError
from tripletnet.training import train
from tripletnet.training.checkpoint import load_checkpoint
from tripletnet.training.loop import _best_epoch
from tripletnet.training.run_data import prepare_run_data

from _mnist import data_root, mnist_slice

DATA = mnist_slice()


def QUIET(_message: str) -> None:  # noqa: N802 - reads as the constant it stands for
    """A logger that drops every line."""


def _config(tmp_path, **overrides):
    # fp32 pinned: which epoch is best depends on the arithmetic, and --precision auto picks bf16 on some CPUs.
    values = {"precision": "fp32", "num_images": 128, "batch_size": 32, "epochs": 1, "eval_images": 100, "num_val_triplets": 16,
              "augment": False, "checkpoint_path": str(tmp_path / "run"), "train_classes": "0-5", "selection_classes": 2}
    values.update(overrides)
    return TrainConfig.from_dict(values)


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(image.numpy()) for image in images}


def test_selection_classes_leave_training_and_are_neither_test_nor_validation_classes(tmp_path):
    data = prepare_run_data(_config(tmp_path), DATA, QUIET)
    assert data.select_labels is not None and data.select_images is not None
    selection = set(data.select_labels.tolist())
    assert len(selection) == 2 and selection <= set(range(6))
    trained = set(data.train_labels.tolist())
    assert trained == set(range(6)) - selection
    assert set(data.eval_labels.tolist()) == {6, 7, 8, 9}  # the test classes are untouched
    assert data.seen_eval_labels is not None and set(data.seen_eval_labels.tolist()) == trained
    # Selection images are training-split images of the selection classes: none trained on, none a validation image.
    of_selection = torch.isin(DATA.train_labels, torch.tensor(sorted(selection)))
    assert _rows(data.select_images) <= _rows(DATA.train_images[of_selection])
    assert not _rows(data.select_images) & (_rows(data.train_images) | _rows(data.val_images))
    assert data.records["split"]["selection_classes"] == [str(label) for label in sorted(selection)]
    assert data.records["split"]["train_classes"] == [str(label) for label in sorted(trained)]


def test_the_selection_classes_come_from_the_seed(tmp_path):
    drawn = {seed: tuple(sorted(set(prepare_run_data(_config(tmp_path, seed=seed), DATA, QUIET).select_labels.tolist())))
             for seed in range(6)}
    assert drawn[0] == tuple(sorted(set(prepare_run_data(_config(tmp_path, seed=0), DATA, QUIET).select_labels.tolist())))
    assert len(set(drawn.values())) > 1  # not always the same classes


@pytest.mark.parametrize(("overrides", "parameter", "message"), [
    ({"selection_classes": 1}, "selection_classes", "at least 2"),
    ({"selection_classes": 5}, "selection_classes", "at least two must remain"),
    ({"train_classes": None}, "selection_classes", "needs an open-set run"),
    ({"selection_classes": 0, "patience": 2}, "patience", "needs --selection_classes"),
])
def test_selection_settings_no_run_can_use_are_refused_naming_the_option(tmp_path, overrides, parameter, message):
    with pytest.raises(ParameterError, match=message) as info:
        config = _config(tmp_path, **overrides)
        config.validate()
        prepare_run_data(config, DATA, QUIET)
    assert info.value.parameter == parameter


def test_the_best_epoch_is_the_highest_selection_val_then_precision_then_the_earliest():
    def record(epoch, val, p1):
        return {"epoch": epoch, "select_val": val, "select_precision_at_1": p1}

    assert _best_epoch([record(1, 0.2, 0.9), record(2, 0.5, 0.8), record(3, 0.4, 1.0)]) == 2
    assert _best_epoch([record(1, 0.5, 0.8), record(2, 0.5, 0.9), record(3, 0.5, 0.9)]) == 2
    assert _best_epoch([record(1, None, 1.0), record(2, 0.0, 0.1)]) == 2  # an unresolved VAL counts as lowest
    assert _best_epoch([{"epoch": 1}, record(2, 0.1, 0.5)]) == 2  # epochs without selection figures are skipped


def test_best_pt_holds_the_best_epoch_and_patience_stops_the_run(tmp_path):
    result = train(_config(tmp_path, epochs=6, patience=1, lr=0.01), data=DATA, log=QUIET)
    history = result.history
    assert all({"select_val", "select_precision_at_1", "best_epoch"} <= set(record) for record in history)
    best = _best_epoch(history)
    assert history[-1]["best_epoch"] == best
    stopped_early = len(history) < 6
    # Patience 1: the run ends at the first epoch that does not improve on the best, or after all 6.
    assert stopped_early == (history[-1]["epoch"] - best >= 1)
    assert all(record["best_epoch"] == record["epoch"] for record in history[:-1])
    best_state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best_state["epoch"] == best
    epoch_state = load_checkpoint(tmp_path / "run" / f"epoch_{best}.pt")
    assert all(torch.equal(best_state["model"][key], value) for key, value in epoch_state["model"].items())


def test_the_log_names_the_selection_classes_and_the_best_epoch(tmp_path, capsys):
    code = main(["train", "--train_classes", "0-5", "--selection_classes", "2", "--epochs", "2", "--num_images", "128",
                 "--batch_size", "32", "--eval_images", "100", "--num_val_triplets", "16", "--checkpoint_path",
                 str(tmp_path / "run"), "--no-download", "--data_path", data_root()])
    err = capsys.readouterr().err
    assert code == 0
    assert "model selection: 100 training images of 2 classes kept out of training" in err
    assert "selection VAL@1e-3" in err and "(best: epoch" in err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2] and (tmp_path / "run" / "best.pt").is_file()


def test_resuming_from_an_earlier_epoch_with_overwrite_removes_a_best_pt_of_a_discarded_epoch(tmp_path):
    first = train(_config(tmp_path, epochs=3, eval_images=300), data=DATA, log=QUIET)
    best = first.history[-1]["best_epoch"]
    assert best > 1, "this run's best epoch must come after epoch 1 for the test to check anything"
    run = tmp_path / "run"
    assert load_checkpoint(run / "best.pt")["epoch"] == best
    # Resuming from epoch 1 discards epochs 2 and 3; a best.pt from one of them must not outlive them.
    train(_config(tmp_path, epochs=1, eval_images=300), resume=run / "epoch_1.pt", overwrite=True, data=DATA, log=QUIET)
    assert load_checkpoint(run / "best.pt")["epoch"] == 1, "best.pt now holds the best of the epochs kept"
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not (run / "epoch_2.pt").exists() and not (run / "epoch_3.pt").exists()
