"""Starting the CLI costs no torch import: the command line, the configs and the dataset registry load without it."""

import subprocess
import sys

import pytest


def test_importing_the_cli_does_not_import_torch():
    # A fresh interpreter: this test session has long imported torch.
    check = "import sys, tripletnet.cli, tripletnet.config, tripletnet.data.datasets; assert 'torch' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_data_package_still_gives_its_names_when_asked():
    check = ("import sys, tripletnet.data as data; assert 'torch' not in sys.modules; "
             "assert all(getattr(data, name) is not None for name in data.__all__); assert 'torch' in sys.modules")
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]


def test_help_and_version_do_not_import_torch():
    # --help of every subcommand builds the whole parser: the use commands' defaults and export formats too.
    check = ("import sys\nfrom tripletnet import cli\nfor argv in (['--version'], ['--help'], ['train', '--help'], "
             "['export', '--help'], ['search', '--help']):\n    try:\n        cli.main(argv)\n    except SystemExit:\n"
             "        pass\nassert 'torch' not in sys.modules, 'torch was imported'")
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_ctrl_c_while_the_command_imports_is_one_line_and_exit_130(monkeypatch, capsys):
    import builtins

    import tripletnet.__main__ as entry

    real_import = builtins.__import__

    def interrupted_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "cli" and level == 1:  # `from .cli import run`: the Ctrl-C lands inside numpy's or torch's import
            raise KeyboardInterrupt
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    with pytest.raises(SystemExit) as exited:
        entry.run()
    assert exited.value.code == 130 and capsys.readouterr().err == "tripletnet: interrupted\n"
