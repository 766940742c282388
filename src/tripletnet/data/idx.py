"""Reader for the IDX format of MNIST-style datasets, gzipped or raw.

IDX: two zero bytes, a type code, the number of dimensions, then each dimension as a big-endian
uint32, then the data in C order. We check every part of that so a truncated or foreign file is an
error that names the file, never a silently wrong array.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

_GZIP_MAGIC = b"\x1f\x8b"
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: str | Path) -> bytes:
    """The file's content, decompressed if it is gzipped (detected by its magic bytes, not its name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path} is a damaged gzip file ({exc}); delete it so it can be fetched again") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a numpy array in native byte order (a read-only view for uint8 data)."""
    if not data:
        raise UserError(f"{name} is empty (expected an IDX file)")
    if len(data) < 4:
        raise UserError(f"{name} is truncated: {len(data)} bytes, shorter than the 4-byte IDX magic number")
    if data[0] != 0 or data[1] != 0:
        raise UserError(f"{name} is not an IDX file (bad magic number {data[:4].hex()}, expected 0000xxyy)")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        known = ", ".join(f"0x{code:02x}" for code in _DTYPES)
        raise UserError(f"{name}: unknown IDX data type 0x{type_code:02x} (known: {known})")
    if ndim == 0:
        raise UserError(f"{name}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{name} is truncated: its IDX header needs {header} bytes, the file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a huge bogus header cannot overflow
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise UserError(f"{name} is {problem}: header promises {expected} data bytes for shape {shape}, found {actual}")
    if math.prod(d for d in shape if d) * dtype.itemsize > np.iinfo(np.intp).max:
        # An empty array whose other axes are astronomically long: numpy cannot even describe it.
        raise UserError(f"{name}: its IDX header declares an impossible shape {shape}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array."""
    return parse_idx(read_bytes(path), str(path))
