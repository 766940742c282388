"""metrics.jsonl: written and read back by one module; a torn last line is skipped, damage elsewhere is an error."""

import json

import pytest

from tripletnet.errors import UserError
from tripletnet.training import RunLog, read_records

RECORDS = [{"epoch": 1, "train_loss": 0.5, "val": None}, {"epoch": 2, "train_loss": 0.25, "val": 0.75}]


def test_appended_records_read_back_equal(tmp_path):
    log = RunLog(tmp_path)
    log.start()
    for record in RECORDS:
        log.append(record)
    assert log.read() == RECORDS
    assert read_records(tmp_path / "metrics.jsonl") == RECORDS == read_records(tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_start_rewrites_the_file_with_a_resumed_history(tmp_path):
    log = RunLog(tmp_path)
    log.start(RECORDS)
    log.append({"epoch": 3})
    log.start(RECORDS[:1])
    assert log.read() == RECORDS[:1]


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[1])[:9])
    assert read_records(path) == RECORDS[:1]


def test_a_damaged_line_before_the_last_is_a_user_error_naming_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{oops\n" + json.dumps(RECORDS[1]) + "\n")
    with pytest.raises(UserError, match="line 2"):
        read_records(path)
    with pytest.raises(UserError, match="no metrics file"):
        read_records(tmp_path / "missing.jsonl")


def test_only_the_main_process_writes(tmp_path):
    log = RunLog(tmp_path, is_main_process=False)
    log.start(RECORDS)
    log.append(RECORDS[0])
    assert not (tmp_path / "metrics.jsonl").exists()


def test_blank_lines_are_skipped_and_a_missing_file_is_a_user_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1}) + "\n\n  \n" + json.dumps({"epoch": 2}) + "\n")
    assert read_records(path) == [{"epoch": 1}, {"epoch": 2}]
    with pytest.raises(UserError, match="no metrics file"):
        read_records(tmp_path / "absent.jsonl")
