"""benchmarks.time_to_target on synthetic run folders: seconds to the VAL target, precision@1 at
budgets, the report, the plot and the command line."""

import json

import pytest

pytest.importorskip("matplotlib")

from benchmarks.time_to_target import (  # noqa: E402  (after the skip: the module plots with matplotlib)
    main,
    plot_time_to_target,
    precision_at_budget,
    read_curve,
    report,
    seconds_to_val,
)

EPOCH_SECONDS = 25.0
EVAL_SECONDS = 1.5


def _write_run(folder, dataset, vals, p_at_1, *, evaluated=None):
    """A run folder as `tripletnet train` leaves it: config.json and one metrics record per epoch."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"dataset": dataset, "epochs": len(vals)}))
    lines = []
    for epoch, (val, p) in enumerate(zip(vals, p_at_1, strict=True), start=1):
        record = {"epoch": epoch, "epoch_seconds": EPOCH_SECONDS, "images_per_second": 2000.0}
        if evaluated is None or epoch in evaluated:
            record.update(val=val, precision_at_1=p, eval_seconds=EVAL_SECONDS)
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_seconds_to_val_is_the_training_time_at_the_end_of_the_first_epoch_reaching_the_target(tmp_path):
    vals = [0.90, None, 0.985, 0.991, 0.989, 0.995]
    run = _write_run(tmp_path / "mnist-a", "mnist", vals, [0.99] * len(vals))
    curve = read_curve(run)
    first = next(i for i, v in enumerate(vals) if v is not None and v >= 0.99)
    assert seconds_to_val(curve, 0.99) == pytest.approx((first + 1) * EPOCH_SECONDS)
    with_eval = read_curve(run, with_eval=True)
    assert seconds_to_val(with_eval, 0.99) == pytest.approx((first + 1) * (EPOCH_SECONDS + EVAL_SECONDS))
    assert seconds_to_val(curve, 0.999) is None


def test_precision_at_a_budget_is_the_last_evaluated_epoch_within_it(tmp_path):
    p_at_1 = [0.70, 0.80, 0.85, 0.88, 0.90]
    run = _write_run(tmp_path / "fashion", "fashion-mnist", [0.3] * 5, p_at_1, evaluated={1, 2, 4, 5})
    curve = read_curve(run)
    assert curve.seconds == pytest.approx([EPOCH_SECONDS * e for e in (1, 2, 4, 5)])
    assert precision_at_budget(curve, EPOCH_SECONDS - 1) is None
    assert precision_at_budget(curve, 3.5 * EPOCH_SECONDS) == p_at_1[1]  # epoch 3 was not evaluated
    assert precision_at_budget(curve, 1e6) == p_at_1[-1]


def test_report_puts_each_run_in_its_datasets_table_and_says_when_a_target_was_missed(tmp_path):
    fast = read_curve(_write_run(tmp_path / "speedrun", "mnist", [0.992, 0.995], [0.995, 0.996]))
    slow = read_curve(_write_run(tmp_path / "defaults", "mnist", [0.95, 0.98], [0.99, 0.993]))
    fashion = read_curve(_write_run(tmp_path / "fashion", "fashion-mnist", [0.4, 0.5], [0.86, 0.88]))
    text = report([fast, slow, fashion], budgets=(30.0, 60.0, 300.0))
    mnist_table, fashion_table = text.split("\n\n")
    assert "speedrun" in mnist_table and "defaults" in mnist_table and "fashion" not in mnist_table
    assert f"**{EPOCH_SECONDS:.1f} s**" in mnist_table
    assert "not reached (best 0.9800" in mnist_table
    assert "fashion" in fashion_table and "speedrun" not in fashion_table
    assert "0.8600" in fashion_table and "(run ended at 50 s)" in fashion_table


def test_plot_writes_a_png_with_one_line_per_run(tmp_path):
    runs = [
        read_curve(_write_run(tmp_path / name, "mnist", [0.9, 0.99, 0.995], [0.98, 0.99, 0.996]))
        for name in ("a", "b", "c")
    ]
    out = plot_time_to_target(runs, tmp_path / "plots" / "ttt.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from benchmarks.time_to_target import time_to_target_figure

    val_axes, p_axes = time_to_target_figure(runs).axes
    expected = [f"{name} (mnist)" for name in ("a", "b", "c")]
    for axes in (val_axes, p_axes):  # the target and budget lines carry no run's name
        assert [line.get_label() for line in axes.get_lines() if "(mnist)" in line.get_label()] == expected


def test_command_line_prints_the_tables_and_a_missing_metrics_file_is_one_line(tmp_path, capsys):
    run = _write_run(tmp_path / "speedrun", "mnist", [0.992], [0.995])
    main([str(run), "--plot", str(tmp_path / "ttt.png")])
    assert "speedrun" in capsys.readouterr().out
    assert (tmp_path / "ttt.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nowhere")])
    assert "no metrics file" in str(exit_info.value.code)


def test_the_pml_loop_writes_a_run_folder_time_to_target_reads_as_a_peer(tmp_path):
    pytest.importorskip("pytorch_metric_learning")
    from benchmarks.pml_loop import train

    from _mnist import data_root, require_dataset

    require_dataset("mnist")
    run_dir = tmp_path / "pml-peer"
    train("reference", 512, data_root(), threads=1, epochs=2, run_dir=str(run_dir))  # two batches per epoch
    curve = read_curve(run_dir)
    assert curve.dataset == "mnist" and len(curve.seconds) == 2
    assert curve.seconds[0] < curve.seconds[1] == pytest.approx(curve.total_seconds)
    assert all(0.0 <= p <= 1.0 for p in curve.precision_at_1)
    assert "pml-peer" in report([curve])
