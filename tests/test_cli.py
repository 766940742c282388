"""Command line: reference spellings, kebab-case, config precedence, and user mistakes."""

import contextlib
import subprocess
import sys

import pytest

from tripletnet.cli import _build_parser, build_train_config, main
from tripletnet.config import TrainConfig

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


MISTAKES = [
    (["--batch_size", "2"], "batch_size"),
    (["--margin", "-1"], "margin"),
    (["--epochs", "0"], "epochs"),
    (["--dataset", "cifar-1000"], "--dataset must be mnist, fashion-mnist, or a folder"),
    (["--mining", "semihard:0.4,medium"], "unknown miner"),
    (["--network", "resnet9000"], "--network must be one of"),
    (["--num_images", "-5"], "num_images"),
    (["--epochs", "many"], "invalid int value"),
]


@pytest.mark.parametrize("extra,needle", MISTAKES)
def test_user_mistakes_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, extra, needle):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) if needle == "invalid int value" else contextlib.nullcontext():
        code = main(["train", "--checkpoint_path", str(run_dir), *extra])
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

