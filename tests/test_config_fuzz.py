"""Property-based fuzzing of the TOML config path: any file gives the config it says, or a one-line refusal that points at it.

A config read must hold the file's values; a refusal is a UserError naming the file, or a
ParameterError naming an option that the file set (the CLI spells it as the flag).
"""

from __future__ import annotations

import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tripletnet.config import ConfigLayer, EvalConfig, TrainConfig, layered_config, load_toml  # noqa: E402
from tripletnet.errors import ParameterError, UserError  # noqa: E402

KEYS = ["epochs", "lr", "margin", "dataset", "network", "precision", "mining", "batch_size", "data_path", "augment",
        "protocol", "far", "n_pairs", "repeats", "embeddings", "eval", "train", "nope"]
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=300), st.just("~no_such_user_anywhere/x"), st.just("a" * 5000), st.just("x.csv"),
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # nan, inf, -inf and 1e+300 are TOML as Python spells them
    if isinstance(value, str):
        safe = string.ascii_letters + string.digits + " ._-/~:,"
        return '"' + "".join(c if c in safe else f"\\U{ord(c):08x}" for c in value) + '"'
    return str(value)


def _document(entries: dict[str, object], table: str | None) -> str:
    lines = [f"[{table}]"] if table else []
    return "\n".join(lines + [f"{key} = {_toml_value(value)}" for key, value in entries.items()]) + "\n"


def _refusal_points_at_the_file(exc: Exception, path, entries: dict[str, object]) -> None:
    message = str(exc)
    assert message and "\n" not in message, "one line"
    if isinstance(exc, ParameterError):
        named = {exc.parameter, *exc.related}
        assert named & set(entries), f"a refused value is one the file set: {message} for {sorted(entries)}"
    else:
        assert path.name in message, f"a refusal names the file: {message}"


def _holds_the_file_values(config: object, entries: dict[str, object]) -> None:
    for key, value in entries.items():
        if hasattr(config, key) and key not in ("data_path", "checkpoint", "embeddings"):  # paths may be expanded
            assert getattr(config, key) == value or (isinstance(value, str) and str(getattr(config, key)) == value), key


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(st.sampled_from(KEYS), SCALARS, max_size=6), table=st.sampled_from([None, "train", "eval"]))
@example(entries={"dataset": "a" * 5000}, table=None)  # longer than a file name may be
@example(entries={"dataset": "~no_such_user_anywhere/x"}, table="train")  # a home directory that does not exist
@example(entries={"lr": float("inf"), "margin": float("nan")}, table=None)
@example(entries={"epochs": 3, "lr": 0.01}, table="train")  # read: the values must arrive
def test_any_toml_table_gives_its_config_or_a_refusal_pointing_at_it(tmp_path, entries, table):
    path = tmp_path / "fuzz.toml"
    path.write_text(_document(entries, table))
    try:
        config: TrainConfig | EvalConfig = layered_config([ConfigLayer(str(path), load_toml(path, "train").values)])
    except (UserError, ParameterError) as exc:
        _refusal_points_at_the_file(exc, path, entries)
    else:
        config.validate()
        if table != "eval":
            _holds_the_file_values(config, entries)
    try:
        values = load_toml(path, "eval").values
        config = EvalConfig.from_dict(values, source=str(path))
        if config.checkpoint is None and config.embeddings is None:  # what the command line gives
            config = config.updated({"embeddings": "given.npz"}, source="command line")
        config.validate()
    except (UserError, ParameterError) as exc:
        _refusal_points_at_the_file(exc, path, entries)
    else:
        assert table == "eval"
        _holds_the_file_values(config, entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400))
def test_any_bytes_as_a_toml_file_give_a_config_or_a_refusal_naming_the_file(tmp_path, content):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content)
    try:
        config = layered_config([ConfigLayer(str(path), load_toml(path, "train").values)])
    except ParameterError as exc:  # only a value the file set can be refused by name
        assert "\n" not in str(exc) and exc.parameter in content.decode("utf-8", "replace"), str(exc)
    except UserError as exc:
        assert "\n" not in str(exc) and path.name in str(exc), str(exc)
    else:
        config.validate()
