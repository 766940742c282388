"""Command line: reference spellings, kebab-case, config precedence, and user mistakes."""

import contextlib
import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import tripletnet
from tripletnet.cli import _build_parser, build_eval_config, build_train_config, main, parameter_message
from tripletnet.config import LR_MAX, MARGIN_MAX, PRESETS, RESUMABLE_FIELDS, EvalConfig, TrainConfig
from tripletnet.errors import ParameterError, UserError
from tripletnet.training.checkpoint import load_checkpoint, save_checkpoint

from _mnist import data_root, require_dataset

REFERENCE_LINE = [
    "train", "--num_images", "59904", "--batch_size", "256", "--epochs", "20", "--margin", "1",
    "--num_workers", "0", "--data_path", "./data/", "--checkpoint_path", "./checkpoints/",
]


def _config(argv):
    return build_train_config(_build_parser().parse_args(argv))


def test_reference_spellings_give_the_reference_settings():
    config = _config(REFERENCE_LINE)
    assert (config.num_images, config.batch_size, config.epochs, config.margin) == (59904, 256, 20, 1.0)
    assert (config.num_workers, config.data_path, config.checkpoint_path) == (0, "./data/", "./checkpoints/")


def test_kebab_case_spellings_are_the_same_options():
    snake = _config(["train", "--num_images", "1000", "--batch_size", "64", "--lr_drop_epoch", "3", "--embedding_dim", "32"])
    kebab = _config(["train", "--num-images", "1000", "--batch-size", "64", "--lr-drop-epoch", "3", "--embedding-dim", "32"])
    assert snake == kebab
    assert snake.embedding_dim == 32 and snake.lr_drop_epoch == 3


def test_every_hyperparameter_is_an_option():
    parser = _build_parser()
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for name in ("lr", "lr_drop_epoch", "lr_drop_factor", "embedding_dim", "mining", "seed", "num_val_triplets", "weight_decay",
                 "dataset", "network"):
        assert f"--{name}" in help_text


def test_toml_config_is_applied_and_the_command_line_wins(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nepochs = 3\nmargin = 0.5\nmining = "hard"\nlr = 1\n')
    config = _config(["train", "--config", str(toml), "--epochs", "7"])
    assert config.epochs == 7, "command line wins over the file"
    assert config.margin == 0.5 and config.mining == "hard"
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_a_toml_config_saved_with_a_byte_order_mark_is_read(tmp_path):
    toml = tmp_path / "notepad.toml"
    toml.write_bytes(b"\xef\xbb\xbf" + "[train]\nmargin = 0.5  # é\n".encode())  # how Windows Notepad saves UTF-8
    assert _config(["train", "--config", str(toml)]).margin == 0.5


def test_classes_in_a_toml_config_may_be_an_array(tmp_path):
    toml = tmp_path / "classes.toml"
    toml.write_text('train_classes = [0, 1, 3]\nholdout_classes = ["cat", "dog"]\n')  # TOML's spelling of "0,1,3"
    config = _config(["train", "--config", str(toml)])
    assert (config.train_classes, config.holdout_classes) == ("0,1,3", "cat,dog")
    toml.write_text("train_classes = [true, 2.5]\n")  # not class labels: refused as before
    with pytest.raises(UserError, match="classes.toml: option 'train_classes' must be str"):
        _config(["train", "--config", str(toml)])


MISTAKES = [
    (["--batch_size", "2"], "batch_size"),
    (["--margin", "-1"], "margin"),
    (["--epochs", "0"], "epochs"),
    (["--dataset", "cifar-1000"], "--dataset must be mnist, fashion-mnist, a folder of class subfolders"),
    (["--mining", "semihard:0.4,medium"], "unknown miner"),
    (["--network", "resnet9000"], "--network must be one of"),
    (["--num_images", "-5"], "num_images"),
    (["--epochs", "many"], "invalid int value"),
    (["--checkpoint_path", ""], "--checkpoint_path must name a folder (write . for the current one), got "),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 4294967295"),
    (["--seed", str(2**63)], "--seed must be a whole number from 0 to 4294967295"),  # past torch's 64-bit seeds
    (
        ["--dataset", ""],
        "--dataset must be mnist, fashion-mnist, a folder of class subfolders, or a .csv file of image paths and labels; "
        "got an empty name",
    ),
]


@pytest.mark.parametrize("extra,needle", MISTAKES)
def test_user_mistakes_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, extra, needle):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) if needle == "invalid int value" else contextlib.nullcontext():
        own_folder = [] if "--checkpoint_path" in extra else ["--checkpoint_path", str(run_dir)]
        code = main(["train", *own_folder, *extra])
        assert code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not run_dir.exists()


def test_unreadable_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('epochs = "twenty"\n')
    assert main(["train", "--config", str(wrong_type)]) == 2
    assert "epochs" in capsys.readouterr().err


def test_console_script_reports_argparse_errors_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "tripletnet", "train", "--no-such-option"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no-such-option" in proc.stderr



# --- help texts, --version, and where an error points ------------------------------------------


def _subcommand_help(name):
    return _build_parser()._subparsers._group_actions[0].choices[name].format_help()


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tripletnet {tripletnet.__version__}"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_help_states_each_default_once_and_never_none(command):
    help_text = " ".join(_subcommand_help(command).split())  # argparse wraps lines
    assert "(default: None)" not in help_text
    assert "(default: $TRIPLETNET_DATA, else ./data/)" in help_text or "(default: the checkpoint's" in help_text
    for config_class in (TrainConfig, EvalConfig):
        for f in fields(config_class):
            help_of_field = " ".join(f.metadata["help"].replace("%%", "%").split())
            if help_of_field in help_text:
                after = help_text.split(help_of_field, 1)[1]
                assert not (after.startswith(" (default:") and "default" in help_of_field), f.name


def test_every_eval_config_field_is_an_evaluate_option_in_both_spellings():
    from tripletnet.cli import KEBAB_NOTE

    help_text = _subcommand_help("evaluate")
    assert " ".join(KEBAB_NOTE.split()) in " ".join(help_text.split())  # listed once, the kebab spelling said once
    parse = _build_parser().parse_args
    for f in fields(EvalConfig):
        assert f"--{f.name}" in help_text
        if "_" in f.name:  # data_path, n_pairs: both take a value
            kebab = f"--{f.name.replace('_', '-')}"
            assert getattr(parse(["evaluate", kebab, "1"]), f.name) is not None, kebab
    parse = _build_parser().parse_args
    assert parse(["evaluate", "--n-pairs", "5"]).n_pairs == parse(["evaluate", "--n_pairs", "5"]).n_pairs == 5
    assert parse(["evaluate", "--no-tsne", "--no-clustering"]).tsne is False


@pytest.mark.parametrize("command,argv,flag", [
    ("train", ["--lr", "-1"], "--lr"),
    ("evaluate", ["--embeddings", "x.npz", "--far", "0"], "--far"),
    # one range for every seed: scikit-learn's k-means takes no more than 2**32 - 1, numpy no negatives
    ("evaluate", ["--embeddings", "x.npz", "--seed", str(2**32)], "--seed"),
    ("pairs", ["--images", ".", "--out", "never-written.csv", "--seed", "-1"], "--seed"),
])
def test_an_error_in_a_subcommand_points_at_that_subcommands_help(capsys, command, argv, flag):
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tripletnet {command}: error: {flag} ")
    assert err.rstrip().endswith(f"(see 'tripletnet {command} --help')")
    assert len(err.strip().splitlines()) == 1


def test_argparse_errors_of_a_subcommand_point_at_its_help():
    proc = subprocess.run([sys.executable, "-m", "tripletnet", "evaluate", "--far", "x"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("tripletnet evaluate: error:") and "(see 'tripletnet evaluate --help')" in proc.stderr


@pytest.mark.parametrize("argv", [["verify", "--checkpoint", "c.pt", "a.png", "b.png", "c.png"], ["train", "--bogus", "1"],
                                  ["search", "--index", "i", "--query", "q.png", "stray"]])
def test_unrecognized_arguments_are_said_by_the_commands_parser_pointing_at_its_help(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"tripletnet {argv[0]}: error: unrecognized arguments: ")
    assert f"(see 'tripletnet {argv[0]} --help')" in err


@pytest.mark.parametrize("argv", [["evaluate", "runs/r1/last.pt"], ["verify", "runs/r1/last.pt", "a.png", "b.png"],
                                  ["export", "runs/r1/last.pt", "--out", "m.onnx"]])
def test_a_checkpoint_given_as_a_bare_argument_is_pointed_at_its_flag(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.splitlines()) == 1, err
    assert "a checkpoint is given as --checkpoint runs/r1/last.pt" in err
    with pytest.raises(SystemExit):  # with --checkpoint given, a stray .pt file is not taken for it
        main([argv[0], "--checkpoint", "runs/r1/last.pt", "other.pt", *argv[2:]])
    assert "a checkpoint is given as" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # another mistake on the line is said alone: the hint is about that argument
        main([argv[0], "--checkp", "runs/r1/last.pt", "--bogus", "x", *argv[2:]])
    assert "a checkpoint is given as" not in capsys.readouterr().err


def test_a_run_folder_given_as_a_bare_argument_is_pointed_at_run(tmp_path, capsys):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "last.pt").write_bytes(b"")
    for folder, said in ((tmp_path / "r1", f"; a run folder is given as --run {tmp_path / 'r1'} "),
                         (tmp_path / "nothing-here", "is required (see"), ("x" * 300, "is required (see")):
        with pytest.raises(SystemExit) as exited:
            main(["report", str(folder), "--out", str(tmp_path / "r.html")])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and said in err and len(err.splitlines()) == 1, err


# --- validation: parameters in the library, flags on the command line ---------------------------


@pytest.mark.parametrize("field_name,value", [
    ("lr", 1e300), ("lr", float("inf")), ("lr", float("nan")), ("lr", LR_MAX * 1.01), ("lr", 0.0),
    ("margin", 1e300), ("margin", float("nan")), ("margin", MARGIN_MAX + 0.1), ("margin", 0.0),
    ("weight_decay", float("inf")), ("lr_drop_factor", float("nan")),
])
def test_overflowing_or_non_finite_rates_and_margins_are_refused_naming_the_field(field_name, value):
    with pytest.raises(ParameterError) as info:
        TrainConfig(**{field_name: value}).validate()
    assert info.value.parameter == field_name


def test_the_bounds_of_lr_and_margin_are_accepted_and_stated_in_the_help():
    TrainConfig(lr=LR_MAX, margin=MARGIN_MAX).validate()
    help_text = " ".join(_subcommand_help("train").split())
    assert f"Adam learning rate, in (0, {LR_MAX:g}]" in help_text and f"triplet margin, in (0, {MARGIN_MAX:g}]" in help_text


def test_a_parameter_error_is_spelled_with_flags_including_related_parameters():
    error = ParameterError("repeats", "applies only to protocol pairs", related=("protocol",))
    assert parameter_message(error) == "--repeats applies only to --protocol pairs"
    assert parameter_message(ParameterError("embeddings_file", "is not an .npz file")) == "--embeddings is not an .npz file"
    assert parameter_message(ParameterError("out_dir", "is a file")) == "--out is a file"


def test_a_library_value_error_that_is_not_a_parameter_error_is_not_hidden(monkeypatch):
    def broken(args):
        raise ValueError("a bug, not a user mistake")

    monkeypatch.setattr("tripletnet.cli._cmd_train", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["train"])


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "1", "--checkpoint_path", "{long}"],
    ["evaluate", "--checkpoint", "{long}.pt"],
    ["embed", "--checkpoint", "{long}.pt", "--out", "e.npz"],
    ["index", "--checkpoint", "{long}.pt", "--images", "g", "--out", "idx"],
    ["search", "--index", "{long}", "--queries", "q"],
])
def test_a_path_name_too_long_for_the_file_system_is_one_line_exit_2_on_every_command(tmp_path, capsys, argv):
    long = str(tmp_path / ("x" * 300))  # one component over the 255 bytes a file name may have
    assert main([part.replace("{long}", long) for part in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "File name too long" in err and "(" in err and len(err) < 250, err  # the path shortened, its length said
    assert not any(tmp_path.iterdir())


def test_an_os_error_that_is_not_about_a_path_name_is_not_hidden(monkeypatch):
    def broken(args):
        raise OSError(5, "Input/output error", "somewhere")

    monkeypatch.setattr("tripletnet.cli._cmd_train", broken)
    with pytest.raises(OSError, match="Input/output"):
        main(["train"])


@pytest.mark.parametrize("argv,needle", [
    (["--embeddings", "e.npz", "--repeats", "5"], "--repeats is not used by protocol 'all-pairs'"),
    (["--embeddings", "e.npz", "--protocol", "kfold", "--repeats", "5"], "--repeats is not used by protocol 'kfold'"),
    (["--embeddings", "e.npz", "--n_pairs", "100"], "--n_pairs is not used by protocol 'all-pairs'"),
    (["--embeddings", "e.npz", "--checkpoint", "c.pt"], "--checkpoint or --embeddings: give exactly one of the two, got both"),
    ([], "--checkpoint or --embeddings: give exactly one of the two, got neither"),
    (["--embeddings", "e.npz", "--protocol", "pairs", "--n_pairs", "1"], "--n_pairs must be at least 2, got 1"),
    (["--embeddings", "e.npz", "--far", "nan"], "--far must be above 0 and below 1 (at 1 every pair is accepted), got nan"),
    (["--embeddings", "e.npz", "--far", "1"], "--far must be above 0 and below 1 (at 1 every pair is accepted), got 1.0"),
])
def test_evaluate_refuses_options_its_protocol_ignores_and_bad_values_before_reading_anything(tmp_path, capsys, argv, needle):
    assert main(["evaluate", *argv]) == 2  # e.npz does not exist: refused before any file is read
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --- TOML: one table per command ----------------------------------------------------------------


def _eval_config(argv):
    return build_eval_config(_build_parser().parse_args(["evaluate", *argv]))


def test_evaluate_reads_the_eval_table_and_the_command_line_wins(tmp_path):
    toml = tmp_path / "both.toml"
    toml.write_text('[train]\nepochs = 3\n\n[eval]\nembeddings = "e.npz"\nprotocol = "pairs"\n'
                    'n_pairs = 500\nrepeats = 4\nseed = 7\nfar = 0.25\n')
    config = _eval_config(["--config", str(toml), "--n_pairs", "800"])
    assert (config.embeddings, config.protocol, config.repeats, config.n_pairs) == ("e.npz", "pairs", 4, 800)
    assert config.far == 0.25 and config.seed == 7
    assert _config(["train", "--config", str(toml)]).epochs == 3


def test_evaluate_without_an_eval_table_or_with_unknown_keys_is_a_clear_error(tmp_path, capsys):
    flat = tmp_path / "flat.toml"
    flat.write_text("epochs = 3\n")
    assert main(["evaluate", "--config", str(flat)]) == 2
    assert "has no [eval] table" in capsys.readouterr().err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[eval]\nembeddings = "e.npz"\nlr = 0.1\n')
    assert main(["evaluate", "--config", str(unknown)]) == 2
    assert "unknown option 'lr'" in capsys.readouterr().err


def test_train_says_once_that_it_ignores_an_eval_table(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 2\n\n[eval]\nprotocol = "kfold"\n')
    config = _config(["train", "--config", str(toml)])
    assert config.epochs == 2
    err = capsys.readouterr().err
    assert err.count("warning: ignoring the [eval] table") == 1 and str(toml) in err


# --- precedence, and --resume -------------------------------------------------------------------


def test_precedence_is_defaults_then_preset_then_file_then_command_line(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("lr = 0.002\nepochs = 4\n")
    preset = PRESETS["reference"]
    assert _config(["train", "--preset", "reference"]).lr == preset["lr"]
    from_file = _config(["train", "--preset", "reference", "--config", str(toml)])
    assert (from_file.lr, from_file.epochs, from_file.network) == (0.002, 4, preset["network"])
    assert _config(["train", "--preset", "reference", "--config", str(toml), "--lr", "0.003"]).lr == 0.003


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_a_valid_config_holding_its_values(name):
    config = _config(["train", "--preset", name])
    assert {key: getattr(config, key) for key in PRESETS[name]} == PRESETS[name]
    untouched = {f.name for f in fields(TrainConfig)} - set(PRESETS[name]) - {"checkpoint_path"}
    assert all(getattr(config, key) == getattr(TrainConfig(), key) for key in untouched), "a preset sets only its own keys"


def _recorded_run(tmp_path, **settings):
    config = TrainConfig(**settings)
    path = tmp_path / "recorded" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"epoch": 2, "config": config.to_dict(), "model": {}})
    return config, str(path)


def test_a_resumed_run_keeps_its_recorded_settings_including_its_presets(tmp_path):
    recorded, checkpoint = _recorded_run(tmp_path, **PRESETS["reference"], epochs=4, margin=0.5)
    beside_checkpoint = dataclasses.replace(recorded, checkpoint_path=str(Path(checkpoint).parent))
    assert _config(["train", "--resume", checkpoint]) == beside_checkpoint
    assert _config(["train", "--resume", checkpoint, "--preset", "reference"]) == beside_checkpoint, "the run's own preset agrees"
    assert _config(["train", "--resume", checkpoint, "--margin", "0.5"]) == beside_checkpoint, "a flag equal to the record"


def test_a_run_an_earlier_version_trained_with_a_seed_now_out_of_range_is_refused_saying_why(tmp_path, capsys):
    _, checkpoint = _recorded_run(tmp_path)
    state = load_checkpoint(checkpoint)
    save_checkpoint(checkpoint, {"epoch": 2, "config": {**state["config"], "seed": -1}, "model": {}})
    assert main(["train", "--resume", checkpoint, "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was trained with --seed -1, outside the 0 to 2**32 - 1 that every seed now takes, so it cannot be resumed" in err
    assert len(err.splitlines()) == 1


def test_a_resumed_run_writes_beside_its_checkpoint_unless_told_otherwise(tmp_path):
    _, checkpoint = _recorded_run(tmp_path, checkpoint_path=str(tmp_path / "where-it-was-trained"))
    assert _config(["train", "--resume", checkpoint]).checkpoint_path == str(tmp_path / "recorded")
    assert _config(["train", "--resume", checkpoint, "--checkpoint_path", "elsewhere"]).checkpoint_path == "elsewhere"


def test_flags_that_may_change_on_resume_apply(tmp_path):
    recorded, checkpoint = _recorded_run(tmp_path, epochs=4)
    toml = tmp_path / "more.toml"
    toml.write_text("eval_every = 0\n")
    config = _config(["train", "--resume", checkpoint, "--config", str(toml), "--epochs", "9", "--threads", "1",
                      "--eval_images", "0", "--data_path", "elsewhere", "--no-download", "--checkpoint_path", "run2"])
    assert (config.epochs, config.threads, config.eval_every, config.eval_images) == (9, 1, 0, 0)
    assert (config.data_path, config.download, config.checkpoint_path) == ("elsewhere", False, "run2")
    assert {f.name for f in fields(TrainConfig) if getattr(config, f.name) != getattr(recorded, f.name)} <= RESUMABLE_FIELDS


def test_a_flag_toml_value_or_preset_contradicting_the_resumed_run_is_refused_naming_each(tmp_path, capsys):
    _, checkpoint = _recorded_run(tmp_path)
    toml = tmp_path / "run.toml"
    toml.write_text("margin = 0.25\nepochs = 30\n")
    run_dir = tmp_path / "out"
    argv = ["train", "--resume", checkpoint, "--preset", "reference", "--config", str(toml), "--lr", "0.5",
            "--network", "wide", "--epochs", "5", "--checkpoint_path", str(run_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--lr 0.5 (command line; the run has 0.001)" in err
    assert "--network 'wide' (command line; the run has 'conv3')" in err
    assert f"margin 0.25 ({toml}; the run has 1.0)" in err
    assert "network 'reference' (preset reference; the run has 'conv3')" in err
    assert "epochs" not in err.split("only")[0], "epochs may change: not named as a conflict"
    assert not run_dir.exists()


def test_train_then_resume_from_the_command_line_continues_the_recorded_run(tmp_path, capsys):
    require_dataset("mnist")
    run_dir = tmp_path / "run"
    small = ["--num_images", "256", "--batch_size", "64", "--eval_every", "0", "--num_val_triplets", "16",
             "--data_path", data_root(), "--no-download", "--threads", "1"]
    assert main(["train", *small, "--epochs", "1", "--lr", "0.002", "--checkpoint_path", str(run_dir)]) == 0
    last = str(run_dir / "last.pt")
    assert main(["train", "--resume", last, "--lr", "0.5", "--epochs", "2"]) == 2
    assert "--lr 0.5 (command line; the run has 0.002)" in capsys.readouterr().err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1, "a refused resume writes nothing"
    assert main(["train", "--resume", last, "--epochs", "2"]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = json.loads((run_dir / "config.json").read_text())
    assert (resumed["epochs"], resumed["lr"], resumed["num_images"]) == (2, 0.002, 256)


def test_holding_classes_out_starts_from_the_open_set_preset_unless_told_otherwise(tmp_path):
    open_set = PRESETS["open-set"]
    config = _config(["train", "--train_classes", "0-4"])
    assert {key: getattr(config, key) for key in open_set} == open_set
    # What the user sets still wins, and a named preset (even the empty default) replaces the implied one.
    assert _config(["train", "--holdout_classes", "7", "--margin", "0.5"]).margin == 0.5
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\ntrain_classes = "1,3"\n')
    assert _config(["train", "--config", str(toml)]).instance_weight == open_set["instance_weight"]
    closed = _config(["train", "--train_classes", "0-4", "--preset", "default"])
    assert (closed.mining, closed.margin, closed.instance_weight) == (TrainConfig().mining, TrainConfig().margin, 0.0)
    assert _config(["train"]) == TrainConfig()  # no classes held out: the defaults


# --- issue 20: what the commands print ---------------------------------------------------------------


def test_train_help_is_grouped_short_and_its_usage_lists_no_spelling_twice(monkeypatch):
    from tripletnet.config import OPTION_GROUPS

    monkeypatch.setenv("COLUMNS", "120")
    text = _subcommand_help("train")
    usage = text.split("\n\n")[0]
    assert "--skip-bad-images" not in usage and "--no-skip_bad_images" not in usage and len(usage.splitlines()) == 1
    headings = [line[:-1] for line in text.splitlines() if line.endswith(" options:")]
    assert headings == [f"{group} options" for group in OPTION_GROUPS]
    sections = {heading: body for heading, body in zip(headings, text.split(" options:\n")[1:], strict=True)}
    for f in fields(TrainConfig):
        group = f.metadata["group"]
        assert group in OPTION_GROUPS, f.name
        section = sections[f"{group} options"].split("\n\n")[0]
        assert re.search(rf"^  --{f.name}(?![\w-])", section, flags=re.M), f"--{f.name} not under '{group}'"
        if "_" in f.name:  # kebab-case: accepted, not listed as an option
            assert not re.search(rf"^  --{f.name.replace('_', '-')}(?![\w-])", text, flags=re.M), f.name
    assert len(text.splitlines()) < 100  # was 211 lines before the options were grouped and shortened


def test_export_format_lists_its_choices(capsys):
    from tripletnet.inference.export import FORMATS

    assert f"--format {{{','.join(FORMATS)}}}" in _subcommand_help("export")
    assert main(["export", "--checkpoint", "x.pt", "--format", "tflite", "--out", "m"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in FORMATS) and len(err.strip().splitlines()) == 1


def test_verify_names_only_the_calibration_facts_it_has():
    from types import SimpleNamespace

    from tripletnet.cli import _threshold_origin
    from tripletnet.inference.model import Calibration

    calibration = Calibration(threshold=0.9, far=1e-3, far_reached=9e-4, val=0.8, fingerprint="f",
                              data={"embeddings": "test.npz", "data_path": None, "images": 10000})
    said = _threshold_origin(SimpleNamespace(threshold=calibration), given=False)
    assert said == "at FAR 0.001, reached 0.0009, calibrated on embeddings test.npz, images 10,000"
    assert _threshold_origin(SimpleNamespace(threshold=None), given=True) == "given"


@pytest.mark.parametrize("rank,says_done", [("0", True), ("1", False)])
def test_only_the_main_process_of_a_torchrun_run_says_done(monkeypatch, capsys, tmp_path, rank, says_done):
    import tripletnet.training as training
    from tripletnet.training.loop import TrainResult

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(training, "train", lambda config, **_: TrainResult(model=None, config=config,  # type: ignore[arg-type]
                                                                          history=[{"train_loss": 0.5}], run_dir=tmp_path))
    assert main(["train", "--epochs", "1", "--checkpoint_path", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("done: 1 epoch,") == (1 if says_done else 0)


def _open_set_slice():
    from tripletnet.data.datasets import DatasetSplits

    from _mnist import mnist

    full = mnist()
    return DatasetSplits(full.train_images[:600], full.train_labels[:600], full.test_images[:200],
                         full.test_labels[:200], full.class_names, "mnist")


def test_a_batch_larger_than_the_training_images_says_where_the_others_went(tmp_path):
    from tripletnet.errors import UserError
    from tripletnet.training import train

    require_dataset("mnist")
    config = TrainConfig(train_classes="0-4", batch_size=512, num_images=59904, epochs=1, eval_every=0,
                         num_val_triplets=16, checkpoint_path=str(tmp_path / "run"))
    with pytest.raises(UserError) as info:
        train(config, data=_open_set_slice(), log=lambda _: None)
    message = str(info.value)
    available, pool, aside = (int(n) for n in re.search(r"only (\d+) .*classes' (\d+), (\d+) are set aside", message).groups())
    assert available + aside == pool and "--batch_size (512)" in message


def test_the_image_counts_of_the_first_lines_agree(tmp_path):
    from tripletnet.training import train

    require_dataset("mnist")
    said: list[str] = []
    config = TrainConfig(train_classes="0-4", batch_size=64, num_images=259, epochs=1, eval_every=0,
                         num_val_triplets=16, checkpoint_path=str(tmp_path / "run"), precision="fp32")
    train(config, data=_open_set_slice(), log=said.append)
    (open_set,) = [s for s in said if s.startswith("open set:")]
    (training,) = [s for s in said if s.startswith("training ")]
    drawn = int(re.search(r"(\d+) training images", open_set).group(1))
    per_epoch, batches = (int(n) for n in re.search(r"(\d+) images per epoch .*?(\d+) batches of 64", training).groups())
    assert drawn == 259 and per_epoch == batches * 64 < drawn
    assert f"whole batches of the {drawn} training images" in training and "images/epoch" not in training


def test_the_pairs_file_table_and_the_repeated_draws_are_aligned_and_in_words():
    import torch

    from tripletnet.api import format_pair_folds
    from tripletnet.evaluation import evaluate_embeddings, format_table
    from tripletnet.evaluation.pairs_folds import evaluate_pair_folds

    gen = torch.Generator().manual_seed(0)
    same = torch.arange(600) % 2 == 0
    distances = torch.rand(600, generator=gen) + (~same).float() * 0.3
    text = format_pair_folds(evaluate_pair_folds(distances.numpy(), same.numpy(), (torch.arange(600) % 10).numpy()), "p.txt")
    rows = [row for row in text.splitlines()[1:] if not row.startswith("  warning:")]
    assert len(rows) == 5, text
    values = [re.split(r"\s{2,}", row.strip(), maxsplit=1) for row in rows]
    assert [name for name, _ in values][2] == "VAL @ FAR 0.001"
    assert len({len(row) - len(value) for row, (_, value) in zip(rows, values, strict=True)}) == 1, text  # one value column
    embeddings = torch.nn.functional.normalize(torch.randn(200, 8, generator=gen), dim=1)
    table = format_table(evaluate_embeddings(embeddings, torch.arange(200) % 4, protocol="pairs", n_pairs=200, repeats=3,
                                             clustering=False))
    repeated = table.split("Repeated random pairs")[1]
    assert "far_reached" not in repeated and "positive_mean" not in repeated and "_" not in repeated.split("\n", 1)[1]
    assert "FAR reached" in repeated and "Positive distance, mean" in repeated


def test_an_image_size_too_small_for_the_network_names_image_size_not_input_shape(tmp_path, capsys):
    from synthetic_images import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "faces", size=16).root
    run_dir = tmp_path / "run"
    assert main(["train", "--dataset", str(root), "--image_size", "4", "--epochs", "1", "--batch_size", "8",
                 "--images_per_class", "2", "--num_val_triplets", "4", "--checkpoint_path", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tripletnet train: error: --image_size must be at least 8 pixels high and wide for this --network")
    assert "input_shape" not in err and not run_dir.exists()


def test_ctrl_c_in_a_command_other_than_train_says_interrupted(monkeypatch, capsys):
    import tripletnet.api

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt  # what Ctrl-C raises: no message of its own

    monkeypatch.setattr(tripletnet.api, "evaluate", interrupted)
    assert main(["evaluate", "--embeddings", "x.npz"]) == 130
    assert capsys.readouterr().err == "tripletnet: interrupted\n"
    # a torchrun process other than the main one, stopped by its agent: the main process speaks for the job
    monkeypatch.setenv("RANK", "1")
    assert main(["evaluate", "--embeddings", "x.npz"]) == 130
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv,said", [
    (["--epochs", "30", "--epochs", "0"], "--epochs was given 2 times"),
    (["--num-images", "64", "--num_im=5", "--epochs", "0"], "--num_images was given 2 times"),  # kebab, abbreviated, =
    (["--no-download", "--download", "--epochs", "0"], "--download/--no-download was given 2 times"),
])
def test_an_option_given_twice_with_different_values_is_said_and_the_last_one_wins(tmp_path, capsys, argv, said):
    code = main(["train", "--checkpoint_path", str(tmp_path / "run"), *argv])
    note, error = capsys.readouterr().err.strip().splitlines()
    assert note == f"tripletnet train: note: {said} with different values; the last one is used"
    assert code == 2 and "--epochs must be positive, got 0" in error, "the last --epochs (0) was the one used"


def test_an_option_repeated_with_its_own_value_or_a_repeated_switch_gets_no_note(tmp_path, capsys):
    assert main(["train", "--checkpoint_path", str(tmp_path / "run"), "--epochs", "0", "--epochs=0"]) == 2
    assert main(["verify", "--checkpoint", str(tmp_path / "absent.pt"), "--json", "--json", "a.png", "b.png"]) == 2
    assert "note" not in capsys.readouterr().err
