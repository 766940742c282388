"""Property-based fuzzing of the TOML config path: any file gives a config or a one-line user error."""

from __future__ import annotations

import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tripletnet.config import ConfigLayer, EvalConfig, layered_config, load_toml  # noqa: E402
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(st.sampled_from(KEYS), SCALARS, max_size=6), table=st.sampled_from([None, "train", "eval"]))
@example(entries={"dataset": "a" * 5000}, table=None)  # longer than a file name may be
@example(entries={"dataset": "~no_such_user_anywhere/x"}, table="train")  # a home directory that does not exist
@example(entries={"lr": float("inf"), "margin": float("nan")}, table=None)
def test_any_toml_table_gives_a_config_or_a_user_error(tmp_path, entries, table):
    path = tmp_path / "fuzz.toml"
    path.write_text(_document(entries, table))
    try:
        layered_config([ConfigLayer(str(path), load_toml(path, "train").values)])
    except (UserError, ParameterError):
        pass
    try:
        EvalConfig.from_dict(load_toml(path, "eval").values, source=str(path)).validate()
    except (UserError, ParameterError):
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400))
def test_any_bytes_as_a_toml_file_give_a_config_or_a_user_error(tmp_path, content):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content)
    try:
        layered_config([ConfigLayer(str(path), load_toml(path, "train").values)])
    except (UserError, ParameterError):
        pass
