"""Property-based fuzzing of every reader of user files: any input is read correctly or refused in one line naming the file.

"Read" is checked against the input itself (the IDX array against the header and bytes, CSV
entries against the files that exist, TOML values against the document); "refused" is a one-line
UserError whose message names the file, so that the user knows which one to fix.

Each reader gets a fixed number of generated inputs (``EXAMPLES``), part pure noise and part
built to pass the first checks and reach the deeper ones (valid headers, mutated real images).
Each test counts the inputs it actually ran and checks the count, so the README can quote it.
"""

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import tomllib
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from tripletnet.config import load_toml
from tripletnet.data.csv import read_image_list_csv
from tripletnet.data.folder import probe_image, read_image
from tripletnet.data.idx import parse_idx, read_bytes
from tripletnet.data.pairs import read_pairs
from tripletnet.errors import UserError

EXAMPLES = {"idx": 120, "image": 120, "csv": 80, "pairs": 120, "toml": 80}


def _fuzz(reader: str):
    # derandomize: the same inputs on every run, so the counts are stable and a failure reproduces.
    return settings(max_examples=EXAMPLES[reader], deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _read_or_refused(call, outcomes: list[str], path: Path, check_read) -> None:
    """Run ``call``: its result must pass ``check_read``, or it must raise a one-line UserError naming ``path``.

    Nothing else (another exception, a wrong result, a refusal that does not say which file) passes. Tallies which.
    """
    try:
        result = call()
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message, "a user error is one line"
        assert path.name in message, f"a refusal names the file: {message}"
        outcomes.append("refused")
    else:
        check_read(result)
        outcomes.append("read")


def _check_counts(reader: str, outcomes: list[str], record_testsuite_property) -> None:
    # Both outcomes must occur, or the generated inputs never reached one side of the reader.
    assert len(outcomes) >= EXAMPLES[reader] and {"read", "refused"} <= set(outcomes), (reader, len(outcomes), set(outcomes))
    record_testsuite_property(f"fuzz_{reader}_inputs", len(outcomes))  # in the JUnit XML, for the README's Reliability table
    record_testsuite_property(f"fuzz_{reader}_read", outcomes.count("read"))


# --- IDX ------------------------------------------------------------------------------------------

_idx_headers = st.builds(
    lambda code, dims, extra: bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + extra,
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]),
    st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=0, max_size=4),
    st.binary(max_size=80),
)


@st.composite
def _idx_files(draw) -> bytes:
    """A well-formed IDX file, sometimes with a few bytes changed: the reader's deeper checks."""
    code, itemsize = draw(st.sampled_from([(0x08, 1), (0x09, 1), (0x0B, 2), (0x0C, 4), (0x0D, 4), (0x0E, 8)]))
    dims = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    data = bytearray(bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
                     + draw(st.binary(min_size=itemsize * int(np.prod(dims)), max_size=itemsize * int(np.prod(dims)))))
    for _ in range(draw(st.integers(0, 2))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def test_fuzz_idx_reader(tmp_path, record_testsuite_property):
    outcomes: list[str] = []

    @_fuzz("idx")
    @given(data=st.binary(max_size=64) | _idx_headers | _idx_files(), compress=st.booleans())
    # found by this fuzzer: shape (0, 2**30, 2**30)
    @example(data=b"\x00\x00\x0e\x03\x00\x00\x00\x00@\x00\x00\x00@\x00\x00\x00", compress=False)
    def run(data, compress):
        path = tmp_path / "file-idx"
        path.write_bytes(gzip.compress(data) if compress else data)
        _read_or_refused(lambda: parse_idx(read_bytes(path), str(path)), outcomes, path, lambda array: _check_idx(array, data))

    run()
    _check_counts("idx", outcomes, record_testsuite_property)


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _check_idx(array: np.ndarray, data: bytes) -> None:
    """The array that the IDX format says ``data`` holds, decoded here by hand: shape from the header, raw values."""
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    count = int(np.prod(shape, dtype=np.int64))
    assert array.shape == shape and array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize
    assert len(data) == 4 + 4 * ndim + count * dtype.itemsize, "only a file of exactly the declared size is read"
    values = np.frombuffer(data, dtype=dtype, count=count, offset=4 + 4 * ndim)
    native = values.byteswap() if dtype.itemsize > 1 else values  # big-endian bytes -> this machine's order, bit for bit
    assert np.ascontiguousarray(array).tobytes() == native.tobytes()


def test_fuzz_idx_reader_on_damaged_gzip(tmp_path):
    path = tmp_path / "damaged.gz"
    for cut in (2, 10, 20):
        path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:cut])
        with pytest.raises(UserError, match="damaged.gz"):
            read_bytes(path)


# --- images ------------------------------------------------------------------------------------------


def _encoded(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(len(fmt) + len(mode))
    pixels = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


_VALID_IMAGES = [_encoded(fmt, mode) for fmt, mode in
                 [("PNG", "RGB"), ("PNG", "L"), ("PNG", "P"), ("JPEG", "RGB"), ("BMP", "RGB"), ("GIF", "P"),
                  ("TIFF", "RGB"), ("PPM", "RGB"), ("WEBP", "RGB"), ("PNG", "I;16"), ("TIFF", "1")]]


@st.composite
def _mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_VALID_IMAGES)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    end = draw(st.integers(1, len(data))) if draw(st.booleans()) else len(data)  # truncated half of the time
    return bytes(data[:end])


def test_fuzz_image_loader(tmp_path, record_testsuite_property):
    outcomes: list[str] = []

    @_fuzz("image")
    @given(data=st.binary(max_size=200) | _mutated_images(), size=st.sampled_from([1, 7, 16]), channels=st.sampled_from([1, 3]))
    def run(data, size, channels):
        path = tmp_path / "image.png"
        path.write_bytes(data)
        _read_or_refused(lambda: probe_image(path), [], path, lambda probed: None)
        try:
            array = read_image(path, size, channels)
        except UserError as exc:
            assert "image.png" in str(exc) and "\n" not in str(exc)
            outcomes.append("refused")
        else:
            assert array.shape == (channels, size, size) and array.dtype == np.uint8
            outcomes.append("read")

    run()
    _check_counts("image", outcomes, record_testsuite_property)


# --- CSV image lists ------------------------------------------------------------------------------------

_csv_rows = st.lists(
    st.tuples(st.sampled_from(["a.png", "b.png", " a.png ", "missing.png", ""]), st.sampled_from(["x", "y", "", "x,y"]),
              st.sampled_from(["", ",train", ",test", ",val", ",train,1"])).map(lambda row: ",".join(row[:2]) + row[2]),
    min_size=1, max_size=6,
).map(lambda rows: "\n".join(rows) + "\n")
_csv_tokens = st.sampled_from(
    [
        "a.png", "b.png", "missing.png", "x", "train", "test", "val", ",", ",", "\n", "\n", '"', " ",
        "path,label,split\n", "\x00", "é", "../a.png", "/abs.png"
    ]
)


def _check_entries(entries) -> None:
    """Entries the loader can use: at least one, each an existing file with an identity and a known split."""
    assert entries and all(entry.path.is_file() and entry.identity.strip() for entry in entries)
    assert all(entry.split in (None, "train", "test") for entry in entries)


def test_fuzz_csv_reader(tmp_path, record_testsuite_property):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    outcomes: list[str] = []

    @_fuzz("csv")
    @given(text=st.text(max_size=80) | st.lists(_csv_tokens, max_size=30).map("".join) | _csv_rows, utf16=st.booleans())
    def run(text, utf16):
        path = tmp_path / "list.csv"
        path.write_bytes(text.encode("utf-16") if utf16 else text.encode("utf-8", "surrogatepass"))
        _read_or_refused(lambda: read_image_list_csv(path), outcomes, path, _check_entries)

    run()
    _check_counts("csv", outcomes, record_testsuite_property)


# --- pairs files --------------------------------------------------------------------------------------

_lfw_files = st.tuples(
    st.sampled_from(["1 1", "2 1", "1", "1\t2", "0 1", "x", "1 1 1", ""]),
    st.lists(
        st.sampled_from(["A 1 2", "A\t2\t1", "A 1 B 1", "B 1 A 2", "A 1 3", "C 1 2", "A 1 B", "A 1 B 1 C", "A x 2"]), max_size=5
    ),
).map(lambda f: "\n".join([f[0], *f[1]]) + "\n")
_csv_pair_files = st.lists(
    st.tuples(
        st.sampled_from(["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg", "nope.jpg", ""]),
        st.sampled_from(["A/A_0002.jpg", "B/B_0001.jpg"]),
        st.sampled_from(["1", "0", "same", "maybe", "true"]),
        st.sampled_from(["", ",0", ",3", ",x"]),
    ).map(lambda r: ",".join(r[:3]) + r[3]),
    min_size=1,
    max_size=6,
).map(lambda rows: "\n".join(rows))
_pair_tokens = st.sampled_from(
    [
        "A", "B", "C", "../A", "1", "2", "3", "0", "-1", "x", "10", "\t", " ", " ", "\n", "\n", "\n", ",", "same",
        "A/A_0001.jpg", "B/B_0001.jpg", "\ufeff", "²"
    ]
)


_VALID_PAIRS = {
    ".txt": "2 1\nA 1 2\nA 1 B 1\nA 2 1\nB 1 A 2\n",
    ".csv": "path_a,path_b,same,fold\nA/A_0001.jpg,A/A_0002.jpg,1,0\nA/A_0002.jpg,B/B_0001.jpg,0,1\n",
}


@st.composite
def _edited_pairs(draw) -> tuple[str, str]:
    """A valid pairs file with a few edits: a line dropped or doubled, a token swapped."""
    suffix = draw(st.sampled_from(sorted(_VALID_PAIRS)))
    lines = _VALID_PAIRS[suffix].splitlines()
    for _ in range(draw(st.integers(0, 2))):
        k = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["drop", "double", "swap"]))
        if edit == "drop" and len(lines) > 1:
            del lines[k]
        elif edit == "double":
            lines.insert(k, lines[k])
        else:
            separator = "," if suffix == ".csv" else " "
            tokens = lines[k].split(separator)
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(_pair_tokens)
            lines[k] = separator.join(tokens)
    return "\n".join(lines) + "\n", suffix


def test_fuzz_pairs_parser(tmp_path, record_testsuite_property):
    for name, count in (("A", 2), ("B", 1)):
        (tmp_path / name).mkdir()
        for number in range(1, count + 1):
            Image.new("RGB", (4, 4)).save(tmp_path / name / f"{name}_{number:04d}.jpg")
    outcomes: list[str] = []

    noise = st.text(max_size=60) | st.lists(_pair_tokens, max_size=40).map("".join)

    @_fuzz("pairs")
    @given(st.tuples(noise | _lfw_files, st.just(".txt")) | st.tuples(noise | _csv_pair_files, st.just(".csv")) | _edited_pairs())
    def run(text_and_suffix):
        text, suffix = text_and_suffix
        path = tmp_path / f"pairs{suffix}"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            pairs = read_pairs(path, tmp_path)
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes.append("refused")
        else:
            assert len(pairs.paths_a) == len(pairs.same) == len(pairs.folds) and all(
                p.is_file() for p in pairs.paths_a + pairs.paths_b
            )
            outcomes.append("read")

    run()
    _check_counts("pairs", outcomes, record_testsuite_property)


# --- TOML config ----------------------------------------------------------------------------------------

_toml_tokens = st.sampled_from(
    [
        "[train]\n", "[eval]\n", "lr", "=", " = ", "0.1", "1e400", "nan", '"x"', "[", "]", "{", "}", "\n",
        "epochs = 3\n", "train = 1\n", "#", "'''", "\x00"
    ]
)


def _check_train_table(table, data: bytes) -> None:
    """What load_toml read is the document's [train] table, or its top-level keys without [eval]."""
    document = tomllib.loads(data.decode("utf-8"))  # a read file is valid TOML
    expected = document["train"] if isinstance(document.get("train"), dict) else {
        key: value for key, value in document.items() if not (key == "eval" and isinstance(value, dict))
    }
    assert table.values == expected
    if any(isinstance(document.get(name), dict) for name in ("train", "eval")):
        assert all(name in ("train", "eval") for name, value in document.items() if isinstance(value, dict)), "no unknown table"


def test_fuzz_toml_config(tmp_path, record_testsuite_property):
    outcomes: list[str] = []

    @_fuzz("toml")
    @given(data=st.binary(max_size=80) | st.lists(_toml_tokens, max_size=20).map(lambda t: "".join(t).encode()))
    @example(data=b"[train]\nlr = 0.1\nepochs = 3\n[eval]\nfar = 0.01\n")  # read: every value must arrive
    def run(data):
        path = tmp_path / "config.toml"
        path.write_bytes(data)
        _read_or_refused(lambda: load_toml(path), outcomes, path, lambda table: _check_train_table(table, data))

    run()
    _check_counts("toml", outcomes, record_testsuite_property)
