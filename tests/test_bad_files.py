"""Files that are damaged, edited or of the wrong kind (issue 19): every command that reads one refuses it in one line.

Checkpoints with a flipped optimiser byte or a structure no command can use, calibration files with
thresholds no distance can have, and ``--out`` paths that name a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from tripletnet.cli import main
from tripletnet.errors import UserError
from tripletnet.inference.model import calibration_path, load_model, write_calibration
from tripletnet.models import build_network
from tripletnet.training.checkpoint import load_checkpoint, save_checkpoint

from _checkpoint import shared_checkpoint
from _mnist import data_root, mnist

CHECKSUMS = ("format", "weights_sha256", "state_sha256")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "digit.png"
    Image.fromarray(mnist().test_images[0].numpy()).save(path)
    return path


def _one_line_refusal(capsys, argv: list[str], *expected: str) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Warning" not in err, err
    for words in expected:
        assert words in err, (words, err)
    return err


# --- the whole checkpoint is checksummed ------------------------------------------------------------------


def _tensor_spans(path: Path) -> list[tuple[int, int]]:
    """(offset, size) in the file of each stored tensor's raw bytes (torch stores them uncompressed)."""
    spans = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as fh:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size:
                fh.seek(info.header_offset + 26)
                name_length, extra_length = (int.from_bytes(fh.read(2), "little") for _ in range(2))
                spans.append((info.header_offset + 30 + name_length + extra_length, info.file_size))
    return spans


def test_inverted_bytes_in_the_optimizer_state_are_refused_in_one_line(checkpoint, tmp_path, capsys):
    original = load_checkpoint(checkpoint)
    data = checkpoint.read_bytes()
    # The largest tensor whose inversion leaves the weights as they were: an Adam moment, not a weight.
    for start, size in sorted(_tensor_spans(checkpoint), key=lambda span: -span[1]):
        damaged = bytearray(data)
        count = min(size, 4000)
        damaged[start:start + count] = bytes(b ^ 0xFF for b in damaged[start:start + count])
        path = tmp_path / "damaged.pt"
        path.write_bytes(bytes(damaged))
        raw = torch.load(path, map_location="cpu", weights_only=True)
        if all(torch.equal(raw["model"][k], original["model"][k]) for k in original["model"]):
            break
    else:
        raise AssertionError("no tensor outside the weights found")
    assert not all(torch.equal(a, b) for a, b in zip(_moments(raw), _moments(original), strict=True)), "the optimizer changed"
    with pytest.raises(UserError, match="damaged: its content .* does not match the checksum"):
        load_checkpoint(path)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "last.pt")
    _one_line_refusal(capsys, ["train", "--resume", run / "last.pt", "--epochs", "5", "--threads", "1"], "damaged")


def _moments(state: dict) -> list[torch.Tensor]:
    return [value for entry in state["optimizer"]["state"].values() for value in entry.values() if value.dim() > 0]


def test_every_field_of_a_saved_checkpoint_is_covered_by_its_checksum(tmp_path):
    state = {"epoch": 1, "config": {"lr": 0.1}, "model": {"w": torch.ones(3)}, "optimizer": {"state": {}, "param_groups": []},
             "scheduler": {"last_epoch": 1}, "history": [{"epoch": 1, "train_loss": 0.5}]}
    edits = {
        "epoch": lambda s: s.update(epoch=2),
        "config": lambda s: s["config"].update(lr=0.2),
        "optimizer": lambda s: s["optimizer"]["param_groups"].append({"lr": 0.1}),
        "scheduler": lambda s: s["scheduler"].update(last_epoch=2),
        "history": lambda s: s["history"][0].update(train_loss=0.25),
        "int to float": lambda s: s["scheduler"].update(last_epoch=1.0),
    }
    save_checkpoint(tmp_path / "c.pt", state)
    for name, edit in edits.items():
        loaded = torch.load(tmp_path / "c.pt", weights_only=True)
        edit(loaded)
        torch.save(loaded, tmp_path / "edited.pt")
        with pytest.raises(UserError, match="does not match the checksum"):
            load_checkpoint(tmp_path / "edited.pt")
        assert name


# --- checkpoints of the wrong structure, on every command that reads them -------------------------------


def _other_architecture(state: dict) -> dict:
    network = "reference" if state["config"].get("network") != "reference" else "conv3"
    other = build_network(network, state["config"]["embedding_dim"], tuple(state["input_shape"]))
    return {**state, "model": other.state_dict()}


def _wrong_moment_shape(state: dict) -> dict:
    optimizer = {**state["optimizer"], "state": dict(state["optimizer"]["state"])}
    first = min(optimizer["state"])
    optimizer["state"][first] = {**optimizer["state"][first], "exp_avg": torch.zeros(7, 7)}
    return {**state, "optimizer": optimizer}


STRUCTURES = {  # what a hand edit or another tool leaves, and the words that must name it
    "other architecture": (_other_architecture, "do not fit"),
    "epoch a string": (lambda s: {**s, "epoch": "3"}, "'epoch' is '3'"),
    "epoch a float": (lambda s: {**s, "epoch": 2.5}, "'epoch' is 2.5"),
    "config a list": (lambda s: {**s, "config": []}, "'config' is a list"),
    "history a dict": (lambda s: {**s, "history": {}}, "'history' is a dict"),
    "input_shape short": (lambda s: {**s, "input_shape": [1, 28]}, "'input_shape' is [1, 28]"),
    "model not tensors": (lambda s: {**s, "model": {"w": [1.0]}}, "'model' is not a dict of named tensors"),
}
RESUME_ONLY = {  # what evaluate and verify may accept (they never read it), a resume must refuse
    "no optimizer": (lambda s: {k: v for k, v in s.items() if k != "optimizer"}, "holds no 'optimizer' state"),
    "moment of another shape": (_wrong_moment_shape, "'exp_avg' of parameter"),
}


def _crafted(checkpoint: Path, folder: Path, change) -> Path:
    """``checkpoint`` changed by ``change`` and saved with fresh checksums where it still can have them."""
    state = change({k: v for k, v in load_checkpoint(checkpoint).items() if k not in CHECKSUMS})
    folder.mkdir()
    path = folder / "last.pt"
    if isinstance(state.get("model"), dict) and all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        save_checkpoint(path, state)
    else:
        torch.save({"format": "tripletnet-checkpoint-v1", **state}, path)
    return path


def _commands(path: Path, image: Path, tmp_path: Path) -> dict[str, list]:
    return {
        "train --resume": ["train", "--resume", path, "--epochs", "9", "--threads", "1", "--data_path", data_root()],
        "evaluate": ["evaluate", "--checkpoint", path, "--data_path", data_root(), "--no-clustering"],
        "verify": ["verify", "--checkpoint", path, image, image, "--threshold", "1"],
        "embed": ["embed", "--checkpoint", path, "--out", tmp_path / "e.npz", "--data_path", data_root()],
        "index": ["index", "--checkpoint", path, "--images", image.parent, "--out", tmp_path / "index"],
        "export": ["export", "--checkpoint", path, "--out", tmp_path / "model.onnx"],
        "report": ["report", "--checkpoint", path, "--out", tmp_path / "report.html", "--data_path", data_root()],
    }


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_a_checkpoint_of_the_wrong_structure_is_one_line_exit_2_on_every_command(checkpoint, image, tmp_path, capsys, structure):
    change, expected = STRUCTURES[structure]
    path = _crafted(checkpoint, tmp_path / "run", change)
    for name, argv in _commands(path, image, tmp_path).items():
        err = _one_line_refusal(capsys, argv, expected)
        assert str(path) in err, (name, err)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"], "nothing was written beside it"
    assert not any((tmp_path / name).exists() for name in ("e.npz", "index", "model.onnx", "report.html"))


@pytest.mark.parametrize("structure", list(RESUME_ONLY))
def test_a_checkpoint_that_cannot_continue_a_run_is_one_line_exit_2_on_resume(checkpoint, image, tmp_path, capsys, structure):
    change, expected = RESUME_ONLY[structure]
    path = _crafted(checkpoint, tmp_path / "run", change)
    err = _one_line_refusal(capsys, _commands(path, image, tmp_path)["train --resume"], expected)
    assert str(path) in err
    verify = ["verify", "--checkpoint", str(path), str(image), str(image), "--threshold", "1"]
    assert main(verify) == 0, "inference still reads it"
    capsys.readouterr()


def test_resume_with_fewer_epochs_than_done_says_so_and_exits_2(checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "last.pt")  # holds epoch 2
    _one_line_refusal(capsys, ["train", "--resume", run / "last.pt", "--epochs", "1", "--threads", "1"],
                      "--epochs must be at least 2", str(run / "last.pt"))
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]


# --- calibration files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", ["NaN", "-5", "Infinity", "1e308", "2.5", '"0.5"'])
def test_a_calibration_file_with_an_impossible_threshold_is_refused_naming_it(checkpoint, image, tmp_path, capsys, threshold):
    copy = tmp_path / "model.pt"
    shutil.copy(checkpoint, copy)
    path = write_calibration(copy, threshold=0.5, far=1e-3, data={"protocol": "all-pairs"})
    record = path.read_text().replace('"threshold": 0.5', f'"threshold": {threshold}')
    assert record != path.read_text()
    path.write_text(record)
    err = _one_line_refusal(capsys, ["verify", "--checkpoint", copy, image, image], str(path))
    assert "threshold" in err
    with pytest.raises(UserError, match="calibration file"):
        _ = load_model(copy, log=lambda m: None).threshold


@pytest.mark.parametrize("threshold", [math.nan, -5.0, math.inf, 1e308])
def test_the_same_thresholds_are_refused_given_and_when_written(checkpoint, image, tmp_path, capsys, threshold):
    verify = ["verify", "--checkpoint", checkpoint, image, image, "--threshold", repr(threshold)]
    _one_line_refusal(capsys, verify, "--threshold must be")
    with pytest.raises(ValueError, match="threshold must be"):
        write_calibration(tmp_path / "model.pt", threshold=threshold, far=1e-3, data={}, fingerprint="f" * 64)


def test_a_calibration_of_another_protocol_is_not_replaced_silently(checkpoint, tmp_path, capsys):
    copy = tmp_path / "model.pt"
    shutil.copy(checkpoint, copy)
    fingerprint = load_model(copy, log=lambda m: None).fingerprint
    write_calibration(copy, threshold=0.5, far=1e-3, data={"protocol": "all-pairs"}, fingerprint=fingerprint)
    code = main(["evaluate", "--checkpoint", str(copy), "--data_path", data_root(), "--no-clustering", "--protocol", "kfold"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "replaces the calibration of protocol all-pairs" in err and "threshold 0.5000" in err, err
    assert "--protocol all-pairs" in err, "it says how to go back"
    assert json.loads(calibration_path(copy).read_text())["data"]["protocol"] == "kfold"


# --- --out never replaces a checkpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["export onnx", "export torchscript", "report"])
def test_out_naming_a_checkpoint_is_refused_even_with_overwrite(checkpoint, tmp_path, capsys, command):
    """`export --overwrite --out` a run's last.pt replaced the checkpoint (a probe's finding): a training run lost."""
    victim = tmp_path / "copy.pt"
    shutil.copy(checkpoint, victim)
    before = victim.read_bytes()
    if command == "report":
        argv = ["report", "--checkpoint", checkpoint, "--out", victim, "--data_path", data_root()]
    else:
        argv = ["export", "--checkpoint", checkpoint, "--format", command.split()[1], "--out", victim]
    for extra in ([], ["--overwrite"]):
        _one_line_refusal(capsys, [*argv, *extra], f"--out {victim} exists and is a PyTorch file",
                          "which --overwrite does not replace")
    assert victim.read_bytes() == before
    dataset_file = tmp_path / "train-images-idx3-ubyte"
    dataset_file.write_bytes(b"\x00\x00\x08\x03" + bytes(12))
    argv[argv.index(victim)] = dataset_file
    _one_line_refusal(capsys, argv, "is not", "--overwrite")
    assert dataset_file.read_bytes() == b"\x00\x00\x08\x03" + bytes(12)


def test_out_naming_the_checkpoint_read_or_a_file_of_its_run_is_refused_even_with_overwrite(checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "last.pt")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / "last.pt.calibration.json").write_text("{}")
    export = ["export", "--checkpoint", run / "last.pt", "--format", "torchscript", "--overwrite", "--out"]
    _one_line_refusal(capsys, [*export, run / "last.pt"], "is the file this command reads")
    _one_line_refusal(capsys, [*export, run / "metrics.jsonl"], f"is a file of the training run in {run}")
    _one_line_refusal(capsys, [*export, run / "last.pt.calibration.json"], "is the calibration of the checkpoint beside it")
    report = ["report", "--run", run, "--data_path", data_root(), "--overwrite", "--out", run / "last.pt"]
    _one_line_refusal(capsys, report, "is the file this command reads")
    assert (run / "last.pt").read_bytes() == Path(checkpoint).read_bytes()
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


@pytest.mark.parametrize("command", ["export onnx", "export torchscript", "report", "pairs", "embed"])
def test_out_naming_a_pipe_is_refused_even_with_overwrite_and_the_pipe_stays(checkpoint, tmp_path, capsys, command):
    """The atomic rename replaced a device or pipe with a regular file: `export --out /dev/null` replaced /dev/null."""
    import stat

    from synthetic_images import make_synthetic_dataset

    pipe = tmp_path / ("pipe.npz" if command == "embed" else "pipe.csv" if command == "pairs" else "pipe.out")
    os.mkfifo(pipe)
    argv = {
        "report": ["report", "--checkpoint", checkpoint, "--out", pipe, "--data_path", data_root()],
        "embed": ["embed", "--checkpoint", checkpoint, "--out", pipe, "--data_path", data_root(), "--split", "test"],
        "pairs": ["pairs", "--images", make_synthetic_dataset(tmp_path / "faces", n_train=4, n_test=4, size=16,
                                                              split_folders=False).root,
                  "--folds", "2", "--per_fold", "4", "--out", pipe],
    }.get(command, ["export", "--checkpoint", checkpoint, "--format", command.split()[-1], "--out", pipe])
    if command != "embed":  # embed has no --overwrite: its .npz is replaced as a re-run means
        argv.append("--overwrite")
    _one_line_refusal(capsys, argv, f"cannot write {pipe}: it is a pipe, not a file")
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)


def test_a_device_is_never_a_file_to_write():
    from tripletnet.fileio import WriteError, refuse_special_file

    with pytest.raises(WriteError, match="it is a character device, not a file") as caught:
        refuse_special_file(os.devnull)  # only looked at: a regression here must not replace the machine's /dev/null
    assert caught.value.exit_code == 2


def test_export_replaces_its_own_earlier_export_and_with_overwrite_any_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.ts"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    first = out.stat().st_mtime_ns
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.stat().st_mtime_ns >= first
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(other), "--overwrite"]) == 0
    assert other.read_bytes()[:2] == b"PK"
    capsys.readouterr()


def test_report_and_pairs_replace_only_their_own_earlier_files_unless_overwrite(checkpoint, tmp_path, capsys):
    """A user's own HTML page or an image named .csv was replaced without a word; now --overwrite says so."""
    from synthetic_images import make_synthetic_dataset

    notes = tmp_path / "notes.html"
    notes.write_text("<!DOCTYPE html>\n<html><body>My notes</body></html>\n")
    argv = ["report", "--checkpoint", checkpoint, "--out", notes, "--data_path", data_root()]
    _one_line_refusal(capsys, argv, f"--out {notes} exists and is not an HTML report (it is an HTML file)", "--overwrite")
    assert "My notes" in notes.read_text()

    images = make_synthetic_dataset(tmp_path / "faces", n_train=4, n_test=4, size=16, split_folders=False).root
    picture = tmp_path / "picture.csv"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    pairs = ["pairs", "--images", images, "--folds", "2", "--per_fold", "4", "--out"]
    _one_line_refusal(capsys, [*pairs, picture], "is not a pairs file", "--overwrite")
    assert picture.read_bytes().startswith(b"\x89PNG")
    for out in (tmp_path / "pairs.csv", tmp_path / "pairs.txt"):  # its own earlier files are replaced, as a re-run means
        assert main([str(a) for a in [*pairs, out]]) == 0
        assert main([str(a) for a in [*pairs, out, "--seed", "1"]]) == 0
    assert main([str(a) for a in [*pairs, picture, "--overwrite"]]) == 0
    assert picture.read_text().startswith("path_a,path_b,same,fold")
    # a file that only starts with a number is the user's; header-less and BOM-led CSV pairs are pairs files
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("3\nmy important numbers\n")
    capsys.readouterr()
    _one_line_refusal(capsys, [*pairs, numbers], "is not a pairs file")
    assert numbers.read_text() == "3\nmy important numbers\n"
    rows = picture.read_text().splitlines()[1:]
    for name, text in (("no-header.csv", "\n".join(rows) + "\n"), ("bom.csv", "\ufeff" + picture.read_text())):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert main([str(a) for a in [*pairs, tmp_path / name]]) == 0, capsys.readouterr().err
