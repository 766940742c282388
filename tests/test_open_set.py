"""Open-set runs end to end: class specs, disjoint train/validation/evaluation classes, what the
checkpoint records, evaluate/embed --classes, and a colour image folder trained and verified on a pairs file."""

import json
import re

import pytest
import torch

from synthetic_images import make_synthetic_dataset
from tripletnet.api import embed_checkpoint
from tripletnet.cli import main
from tripletnet.config import TrainConfig
from tripletnet.data import class_split, load_image_folder, parse_class_spec
from tripletnet.errors import ParameterError, UserError
from tripletnet.training import train
from tripletnet.training.checkpoint import load_checkpoint, model_from_checkpoint
from tripletnet.training.run_data import prepare_run_data

from _mnist import data_root, mnist_slice

DATA = mnist_slice()
def QUIET(_message: str) -> None:  # noqa: N802 - reads as the constant it stands for
    """A logger that drops every line."""


def _config(tmp_path, **overrides):
    values = {"num_images": 128, "batch_size": 32, "epochs": 1, "eval_images": 100, "num_val_triplets": 16,
              "augment": False, "checkpoint_path": str(tmp_path / "run"), "train_classes": "0-4"}
    values.update(overrides)
    return TrainConfig.from_dict(values)


# --- class specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "expected"), [
    ("0-4", (0, 1, 2, 3, 4)), ("1,3,5", (1, 3, 5)), ("7, 2-3", (2, 3, 7)), ("9", (9,)),
])
def test_class_specs_accept_ranges_and_lists(spec, expected):
    assert parse_class_spec(spec, [str(d) for d in range(10)], "train_classes") == expected


def test_a_class_name_wins_over_reading_the_token_as_a_label():
    names = ("T-shirt/top", "Trouser", "7")
    assert parse_class_spec("T-shirt/top,Trouser", names, "train_classes") == (0, 1)
    assert parse_class_spec("7", names, "train_classes") == (2,)  # the class named 7, not label 7


@pytest.mark.parametrize(("train_classes", "holdout_classes", "parameter", "message"), [
    ("0-10", None, "train_classes", "class 10, which the dataset lacks"),
    ("cat", None, "train_classes", "class 'cat', which the dataset lacks"),
    ("0-4", "4-6", "train_classes", "overlap in 4"),
    ("3", None, "train_classes", "at least two"),
    (None, "0-8", "train_classes", "at least two"),
    ("5-3", None, "train_classes", "start is after its end"),
    ("1,,2", None, "train_classes", "must list classes"),
])
def test_bad_class_specs_are_refused_naming_the_option(train_classes, holdout_classes, parameter, message):
    with pytest.raises(ParameterError, match=message) as info:
        class_split(DATA, train_classes, holdout_classes)
    assert info.value.parameter == parameter


def test_bad_class_specs_are_one_line_on_the_command_line(tmp_path, capsys):
    code = main(["train", "--train_classes", "0-4", "--holdout_classes", "3-9", "--epochs", "1",
                 "--checkpoint_path", str(tmp_path / "run"), "--no-download", "--data_path", data_root()])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--train_classes and --holdout_classes overlap in 3, 4" in err
    assert not (tmp_path / "run").exists()


def test_a_run_that_holds_classes_out_says_first_that_it_starts_from_the_open_set_preset(tmp_path, capsys):
    code = main(["train", "--train_classes", "0-4", "--epochs", "1", "--num_images", "256", "--batch_size", "64",
                 "--eval_images", "200", "--num_val_triplets", "16", "--checkpoint_path", str(tmp_path / "run"),
                 "--no-download", "--data_path", data_root()])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 0
    assert "starts from --preset open-set" in lines[0] and "--instance_weight 1.0" in lines[0]
    assert sum("--preset open-set" in line for line in lines) == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["instance_weight"] == 1.0


# --- the split a run uses ------------------------------------------------------------------------


def test_open_set_training_validation_and_evaluation_classes_are_disjoint_from_the_held_out_ones(tmp_path):
    config = _config(tmp_path, train_classes="0-4")
    data = prepare_run_data(config, DATA, QUIET)
    train_set = set(data.train_labels.tolist())
    assert train_set == {0, 1, 2, 3, 4}
    assert set(data.eval_labels.tolist()) == {5, 6, 7, 8, 9}
    assert data.seen_eval_labels is not None and set(data.seen_eval_labels.tolist()) == {0, 1, 2, 3, 4}
    # The validation images are training-split images of training classes, none of them trained on.
    pool = torch.nonzero(DATA.train_labels < 5).flatten()
    rows = {bytes(DATA.train_images[i].numpy()): int(DATA.train_labels[i]) for i in pool.tolist()}
    val_labels = [rows[bytes(image.numpy())] for image in data.val_images]
    assert set(val_labels) <= {0, 1, 2, 3, 4}
    train_rows = {bytes(image.numpy()) for image in data.train_images}
    assert not train_rows & {bytes(image.numpy()) for image in data.val_images}
    assert data.records["split"] == {"train_classes": ["0", "1", "2", "3", "4"], "holdout_classes": ["5", "6", "7", "8", "9"],
                                     "test_classes": [str(digit) for digit in range(10)]}  # MNIST's test split holds every digit


def test_holdout_classes_alone_trains_on_the_rest_and_with_train_classes_evaluates_on_them_only(tmp_path):
    only_holdout = prepare_run_data(_config(tmp_path, train_classes=None, holdout_classes="8,9"), DATA, QUIET)
    assert set(only_holdout.train_labels.tolist()) == set(range(8)) and set(only_holdout.eval_labels.tolist()) == {8, 9}
    both = prepare_run_data(_config(tmp_path, train_classes="0-3", holdout_classes="7", eval_every=0), DATA, QUIET)
    assert set(both.train_labels.tolist()) == {0, 1, 2, 3} and set(both.eval_labels.tolist()) == {7}
    # Evaluated after each epoch, one held-out identity gives no negative pair: said before training, not after it.
    with pytest.raises(UserError, match="hold a single identity, so the evaluation has no positive and negative pairs"):
        prepare_run_data(_config(tmp_path, train_classes="0-3", holdout_classes="7"), DATA, QUIET)


def test_a_closed_set_run_draws_exactly_what_it_always_drew(tmp_path):
    from tripletnet.data import stratified_subset
    from tripletnet.training.validation import draw_validation_triplets

    config = _config(tmp_path, train_classes=None)
    data = prepare_run_data(config, DATA, QUIET)
    subset = stratified_subset(DATA.train_labels, config.num_images, config.seed)
    assert torch.equal(data.train_images, DATA.train_images[subset])
    assert torch.equal(data.val_triplets, draw_validation_triplets(DATA.test_labels, config.num_val_triplets, config.seed))
    assert data.val_images is DATA.test_images and data.seen_eval_images is None and "split" not in data.records


@pytest.fixture(scope="module")
def open_run(tmp_path_factory):
    """One open-set run on digits 0-4, shared by the tests that read its checkpoint."""
    tmp_path = tmp_path_factory.mktemp("open")
    return train(_config(tmp_path), data=DATA, log=QUIET), tmp_path / "run" / "last.pt"


def test_an_open_set_run_reports_unseen_and_seen_figures_and_its_checkpoint_records_the_split(open_run):
    result, checkpoint = open_run
    record = result.history[-1]
    assert {"val", "precision_at_1", "seen_val", "seen_precision_at_1"} <= set(record)
    assert record["eval_images"] == 100 and record["seen_eval_images"] == 100
    state = load_checkpoint(checkpoint)
    assert state["split"]["holdout_classes"] == ["5", "6", "7", "8", "9"]
    assert state["input"] == {"channels": 1, "image_size": 28, "mean": [0.5], "std": [0.5]}
    assert set(state["model"]) == set(result.model.state_dict())  # normalisation is not in the weights


def test_evaluate_defaults_to_the_unseen_classes_and_classes_chooses(open_run):
    _, checkpoint = open_run
    labels = {which: set(embed_checkpoint(checkpoint, data=DATA, classes=which, log=QUIET).labels.tolist())
              for which in (None, "unseen", "seen", "all")}
    assert labels[None] == labels["unseen"] == {5, 6, 7, 8, 9}
    assert labels["seen"] == {0, 1, 2, 3, 4} and labels["all"] == set(range(10))


def test_embed_on_the_command_line_takes_classes(open_run, tmp_path, capsys):
    _, checkpoint = open_run
    out = tmp_path / "seen.npz"
    argv = ["embed", "--checkpoint", str(checkpoint), "--classes", "seen", "--out", str(out), "--data_path", data_root()]
    assert main(argv) == 0
    from tripletnet.api import load_embeddings

    assert set(load_embeddings(out).labels.tolist()) == {0, 1, 2, 3, 4}


def test_classes_other_than_all_need_a_run_that_held_classes_out(tmp_path):
    train(_config(tmp_path, train_classes=None, eval_every=0), data=DATA, log=QUIET)
    assert set(embed_checkpoint(tmp_path / "run" / "last.pt", data=DATA, log=QUIET).labels.tolist()) == set(range(10))
    with pytest.raises(ParameterError, match="held classes out") as info:
        embed_checkpoint(tmp_path / "run" / "last.pt", data=DATA, classes="unseen", log=QUIET)
    assert info.value.parameter == "classes"


# --- your own images ------------------------------------------------------------------------------


def test_folder_normalisation_comes_from_its_training_split_and_travels_in_the_checkpoint(tmp_path):
    dataset = make_synthetic_dataset(tmp_path / "faces", n_train=6, n_test=4, images_per_identity=6)
    data = load_image_folder(dataset.root, log=QUIET)
    config = _config(tmp_path, dataset=str(dataset.root), train_classes=None, num_images=16, batch_size=8, eval_images=0,
                     num_val_triplets=4, image_size=32)
    result = train(config, log=QUIET)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    reloaded = load_image_folder(dataset.root, config.image_options(), log=QUIET)
    assert state["input"]["channels"] == 3 and state["input"]["image_size"] == 32
    # The expected statistics computed here, from the training split's pixels alone (population std, [0, 1] scale):
    # a mean/std that also saw the test images would differ (checked first, so that the test can tell).
    train_pixels = reloaded.train_images.double() / 255
    expected_mean = train_pixels.mean(dim=(0, 2, 3)).tolist()
    expected_std = train_pixels.std(dim=(0, 2, 3), correction=0).tolist()
    leaked = (torch.cat([reloaded.train_images, reloaded.test_images]).double() / 255).mean(dim=(0, 2, 3)).tolist()
    assert leaked != pytest.approx(expected_mean, abs=1e-3), "train+test statistics must differ for the test to mean anything"
    assert state["input"]["mean"] == pytest.approx(expected_mean, abs=1e-6)
    assert state["input"]["std"] == pytest.approx(expected_std, abs=1e-6)
    assert state["input"]["mean"] != pytest.approx(list(data.mean))  # the 32x32 crop, not the default size's statistics
    model, _ = model_from_checkpoint(state)
    mean, std = model.input_normalization()
    assert mean == pytest.approx(expected_mean, abs=1e-6) and std == pytest.approx(expected_std, abs=1e-6)
    assert (mean, std) == result.model.input_normalization()
    assert state["split"]["holdout_classes"] == list(dataset.test_identities)  # the folder's test-only identities
    assert state["dataset_source"]["root"] == str(dataset.root)


def test_a_colour_folder_trains_then_a_pairs_file_of_its_unseen_identities_is_verified(tmp_path, capsys):
    dataset = make_synthetic_dataset(tmp_path / "faces", n_train=6, n_test=20, images_per_identity=4)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset.root), "--image_size", "32", "--num_images", "16", "--batch_size", "8",
                 "--epochs", "1", "--eval_images", "0", "--num_val_triplets", "4", "--no-augment",
                 "--checkpoint_path", str(run)]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["eval_images"] == 80 and "seen_val" not in record  # the test split holds unseen identities only
    pairs = tmp_path / "pairs.txt"
    assert main(["pairs", "--images", str(dataset.root / "test"), "--out", str(pairs), "--folds", "10", "--per_fold", "4"]) == 0
    assert pairs.read_text().splitlines()[0].split() == ["10", "2"]
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--pairs", str(pairs), "--images", str(dataset.root / "test"),
                 "--flip", "mean", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_pairs"] == 40 and result["n_folds"] == 10 and 0 <= result["accuracy_mean"] <= 1
    # A pairs file of one fold is refused in its own terms (it named a --folds flag evaluate does not have).
    one_fold = tmp_path / "one-fold.csv"
    first, second = (sorted((dataset.root / "test" / name).iterdir()) for name in dataset.test_identities[:2])
    one_fold.write_text(f"{first[0]},{first[1]},1,0\n{first[0]},{second[0]},0,0\n")
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--pairs", str(one_fold)]) == 2
    err = capsys.readouterr().err.strip()
    assert "one-fold.csv holds 1 fold" in err and "--folds must" not in err and len(err.splitlines()) == 1
    # The folder moved: --data_path points evaluate at its new place.
    moved = tmp_path / "moved"
    dataset.root.rename(moved)
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--data_path", str(moved), "--json", "--no-clustering"]) == 0
    assert json.loads(capsys.readouterr().out)
    # Without --data_path the message says the folder moved (it named embed's non-existent --dataset flag).
    assert main(["embed", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"were at {dataset.root}, which no longer exists: give their new place with --data_path" in err
    assert "--dataset" not in err and len(err.splitlines()) == 1


def test_pairs_options_without_a_pairs_file_are_refused(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--flip", "mean"]) == 2
    assert "--flip applies only with --pairs" in capsys.readouterr().err
    assert main(["evaluate", "--embeddings", str(tmp_path / "x.npz"), "--pairs", str(tmp_path / "p.txt")]) == 2
    assert "--pairs needs --checkpoint" in capsys.readouterr().err
    pairs_and_protocol = ["--pairs", str(tmp_path / "p.txt"), "--protocol", "kfold"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x.pt"), *pairs_and_protocol]) == 2
    assert "--protocol does not apply with --pairs: the file is evaluated by its own folds" in capsys.readouterr().err


def test_the_first_log_line_counts_the_images_an_epoch_really_uses(tmp_path, mnist):
    """Open set: --num_images larger than the training classes hold is capped, and the log says the capped number."""
    from tripletnet.config import TrainConfig
    from tripletnet.data import DatasetSplits
    from tripletnet.training import train

    small = DatasetSplits(mnist.train_images[:600], mnist.train_labels[:600], mnist.test_images[:200],
                          mnist.test_labels[:200], mnist.class_names, "mnist")
    said: list[str] = []
    config = TrainConfig(train_classes="0-4", num_images=59904, batch_size=64, epochs=1, eval_every=0,
                         num_val_triplets=16, checkpoint_path=str(tmp_path / "run"))
    train(config, data=small, log=said.append)
    (line,) = [s for s in said if s.startswith("training ")]
    steps = int(re.search(r"(\d+) batches of 64", line).group(1))
    assert f"{steps * 64} images per epoch" in line and "59904" not in line



# --- folders and CSV lists whose test identities are all unseen: the many-identities preset -----------------


def _train_config(*argv):
    from tripletnet.cli import _build_parser, build_train_config

    return build_train_config(_build_parser().parse_args(["train", *argv]))


OPEN_SET = {"mining": "semihard", "margin": 0.2, "instance_weight": 1.0}


def _settings(config):
    return {key: getattr(config, key) for key in OPEN_SET}


DEFAULTS = {key: getattr(TrainConfig(), key) for key in OPEN_SET}


def test_a_folder_whose_test_identities_are_all_unseen_trains_the_defaults_longer_and_other_presets_still_apply(tmp_path):
    from tripletnet.config import MANY_IDENTITIES_PRESET, PRESETS

    data = make_synthetic_dataset(tmp_path / "given", size=32)
    many = _train_config("--dataset", str(data.root))
    assert _settings(many) == DEFAULTS  # the defaults' mining and margin, not the open-set preset's
    assert {key: getattr(many, key) for key in PRESETS[MANY_IDENTITIES_PRESET]} == PRESETS[MANY_IDENTITIES_PRESET]
    assert many.epochs > TrainConfig().epochs
    assert _train_config("--dataset", str(data.root), "--preset", "default").epochs == TrainConfig().epochs
    assert _train_config("--dataset", str(data.root), "--epochs", "3").epochs == 3
    assert _train_config("--dataset", str(data.root), "--margin", "0.5").margin == 0.5  # what the user sets still wins
    assert _settings(_train_config("--dataset", str(data.root), "--preset", "open-set")) == OPEN_SET
    flat = make_synthetic_dataset(tmp_path / "flat", size=32, split_folders=False)
    assert _settings(_train_config("--dataset", str(flat.root))) == DEFAULTS
    # Held-out classes of a registered dataset are the few-identities case: they still start from open-set.
    assert _settings(_train_config("--train_classes", "0-4")) == OPEN_SET


def test_which_folders_and_csv_lists_count_as_all_unseen(tmp_path):
    import shutil

    from tripletnet.config import unseen_test_identities

    data = make_synthetic_dataset(tmp_path / "mixed", size=32)
    assert "are none of its" in unseen_test_identities(TrainConfig(dataset=str(data.root)))
    seen = sorted((data.root / "train").iterdir())[0]
    shutil.copytree(seen, data.root / "test" / seen.name)
    assert unseen_test_identities(TrainConfig(dataset=str(data.root))) is None  # one test identity is a training one
    images = sorted(p.relative_to(data.root).as_posix() for p in data.root.rglob("*.png"))
    rows = [f"{path},{path.split('/')[1]},{path.split('/')[0]}" for path in images]
    (data.root / "mixed.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    assert unseen_test_identities(TrainConfig(dataset=str(data.root / "mixed.csv"))) is None
    unseen = [row for row in rows if not (row.startswith("test/") and f"/{seen.name}/" in row)]
    (data.root / "unseen.csv").write_text("path,label,split\n" + "\n".join(unseen) + "\n")
    assert unseen_test_identities(TrainConfig(dataset=str(data.root / "unseen.csv"))) is not None
    flat = make_synthetic_dataset(tmp_path / "flat", size=32, split_folders=False)
    assert "split by identity" in unseen_test_identities(TrainConfig(dataset=str(flat.root)))
    assert unseen_test_identities(TrainConfig(dataset=str(flat.root), split_by="image")) is None


def test_a_folder_run_with_unseen_test_identities_says_so_and_why_in_its_first_line(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "given", size=32)
    code = main(["train", "--dataset", str(data.root), "--epochs", "1", "--batch_size", "8", "--num_val_triplets", "4",
                 "--precision", "fp32", "--checkpoint_path", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 0
    assert lines[0].startswith("the 4 test identities of") and "none of its 6 training identities" in lines[0]
    # --epochs 1 was given: the note names only the preset values the run takes (it said --epochs 30 here)
    assert "starts from --preset many-identities (--lr_drop_epoch 23; --epochs as given)" in lines[0]
    assert "glyph benchmark" in lines[0] and "--preset open-set" in lines[0] and "--preset default" in lines[0]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["margin"] == TrainConfig().margin and recorded["epochs"] == 1  # the command line wins


def test_single_image_identities_stay_in_training_and_ask_no_validation_images(tmp_path):
    """A folder of many one-image identities (kept as negatives) was refused: each counted as two validation images."""
    import numpy as np

    from synthetic_images import identity_name, write_identity_images

    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    for index in range(12):
        write_identity_images(root / "train", index, 4, rng, size=16)
    for index in range(12, 112):
        write_identity_images(root / "train", index, 1, rng, size=16)
    for index in range(112, 116):
        write_identity_images(root / "test", index, 3, rng, size=16)
    data = load_image_folder(root, log=lambda _: None)
    config = TrainConfig(dataset=str(root), image_size=16, batch_size=8, eval_images=0, num_val_triplets=8, precision="fp32")
    run = prepare_run_data(config, data, lambda _: None)
    validation = {data.class_names[label] for label in data.train_labels[_validation_indices(data, run)].tolist()}
    singles = {identity_name(index) for index in range(12, 112)}
    assert validation and not validation & singles  # validation from the 4-image identities only
    assert {data.class_names[label] for label in run.train_labels.tolist()} >= singles  # every single image trains
    assert len(run.train_labels) + len(run.val_images) == len(data.train_labels)


def _validation_indices(data, run) -> torch.Tensor:
    """Positions in the training split of the images prepare_run_data set aside (matched by their pixels)."""
    rows = {bytes(image.numpy().tobytes()): index for index, image in enumerate(data.train_images)}
    return torch.tensor([rows[bytes(image.numpy().tobytes())] for image in run.val_images])


def test_a_folder_run_started_with_a_relative_path_resumes_from_another_directory_and_from_a_moved_folder(
        tmp_path, monkeypatch, capsys):
    """config.json records the folder as given ("faces"): a resume from elsewhere looked for ./faces (a probe's finding)."""
    import shutil

    make_synthetic_dataset(tmp_path / "faces", n_train=6, n_test=4, images_per_identity=4)
    monkeypatch.chdir(tmp_path)
    small = ["--image_size", "16", "--num_images", "16", "--batch_size", "8", "--eval_images", "0", "--num_val_triplets", "4"]
    assert main(["train", "--dataset", "faces", *small, "--epochs", "1", "--checkpoint_path", "run"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--resume", str(tmp_path / "run" / "last.pt"), "--epochs", "2"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    shutil.move(tmp_path / "faces", tmp_path / "moved")  # --data_path names the folder's new place, as for evaluate
    moved = ["--data_path", str(tmp_path / "moved")]
    assert main(["train", "--resume", str(tmp_path / "run" / "last.pt"), "--epochs", "3", *moved]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 3
    assert "images now" not in capsys.readouterr().err, "the same images: no note"
    sorted((tmp_path / "moved" / "train").rglob("*.png"))[0].unlink()  # the folder edited under the run
    assert main(["train", "--resume", str(tmp_path / "run" / "last.pt"), "--epochs", "4", *moved]) == 0
    assert "holds 23 training and 16 test images now, 24 and 16 when the run began" in capsys.readouterr().err


def test_a_test_split_of_one_image_per_identity_is_refused_before_training_and_leaves_no_run_folder(tmp_path, capsys):
    """A glyph build with one test font trained an epoch, then failed to evaluate, and its folder blocked a rerun."""
    dataset = make_synthetic_dataset(tmp_path / "faces", n_train=6, n_test=5, images_per_identity=4)
    for image in (dataset.root / "test").rglob("*.png"):
        if not image.stem.endswith("_0001"):
            image.unlink()
    assert len(list((dataset.root / "test").rglob("*.png"))) == 5, "one image per test identity"
    small = ["--image_size", "16", "--num_images", "16", "--batch_size", "8", "--num_val_triplets", "4"]
    assert main(["train", "--dataset", str(dataset.root), *small, "--checkpoint_path", str(tmp_path / "run")]) == 2
    assert "no two images of one identity" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(["train", "--dataset", str(dataset.root), *small, "--eval_every", "0", "--checkpoint_path",
                 str(tmp_path / "run")]) == 0
