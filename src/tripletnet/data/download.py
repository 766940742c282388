"""Fetch a file from a list of mirrors: retries with backoff, atomic writes, content verified before it is kept."""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ..fileio import atomic_path

Opener = Callable[..., object]
Verifier = Callable[[Path], str | None]  # returns what is wrong with a downloaded file, or None

# Pauses between the tries of one mirror (so len + 1 tries each). Short: offline should fail in seconds.
RETRY_DELAYS_S: tuple[float, ...] = (1.0, 3.0)
# Per socket operation, not for the whole file: a dead mirror is abandoned quickly.
TIMEOUT_S = 15.0


class DownloadError(Exception):
    """No mirror gave a file with the expected content; the message says what each mirror did."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch(
    url: str,
    dest: Path,
    *,
    timeout: float = TIMEOUT_S,
    opener: Opener | None = None,
    progress: Callable[[str], None] = _stderr,
) -> None:
    """Download ``url`` to ``dest`` atomically (a failed download leaves nothing behind)."""
    # Looked up at call time, so tests can monkeypatch urllib.request.urlopen to simulate being offline.
    open_url = opener or urllib.request.urlopen
    with atomic_path(dest) as tmp:
        with open_url(url, timeout=timeout) as response, open(tmp, "wb") as out:
            headers = getattr(response, "headers", None)
            total = int(headers.get("Content-Length") or 0) if headers is not None else 0
            done, next_report = 0, 0.25
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if total and done / total >= next_report:
                    progress(f"  {dest.name}: {100 * done / total:3.0f}% of {total / 1e6:.1f} MB")
                    next_report += 0.25
            if not total:
                progress(f"  {dest.name}: {done / 1e6:.1f} MB")


def _retryable(exc: Exception) -> bool:
    """A server error or a network failure may pass; a 404 or a bad URL will not."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    return not isinstance(exc, ValueError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    return str(getattr(exc, "reason", None) or exc or type(exc).__name__)


def fetch_verified(
    name: str,
    mirrors: Sequence[str],
    dest: Path,
    verify: Verifier,
    *,
    opener: Opener | None = None,
    progress: Callable[[str], None] = _stderr,
    delays: Sequence[float] | None = None,
) -> str:
    """Download ``name`` from the first mirror that serves content ``verify`` accepts; return its URL.

    Each mirror is tried ``len(delays) + 1`` times while failures look transient. A file that fails
    verification is deleted and the next mirror is tried.
    """
    pauses = tuple(RETRY_DELAYS_S if delays is None else delays)
    errors: dict[str, str] = {}  # the last failure per mirror, for one readable message
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        for attempt in range(len(pauses) + 1):
            progress(f"downloading {url}" + (f" (try {attempt + 1})" if attempt else ""))
            try:
                fetch(url, dest, opener=opener, progress=progress)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                errors[mirror] = f"{url}: {_describe(exc)}"
                if attempt < len(pauses) and _retryable(exc):
                    time.sleep(pauses[attempt])
                    continue
                break
            problem = verify(dest)
            if problem is None:
                return url
            dest.unlink(missing_ok=True)
            errors[mirror] = f"{url}: {problem}"
            break
    raise DownloadError("; ".join(errors.values()) or "no mirror configured")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
