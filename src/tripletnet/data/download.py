"""Fetch a file from a list of mirrors: retries, atomic writes, content verified before it is kept."""

from __future__ import annotations

import hashlib
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ..fileio import atomic_path

Opener = Callable[..., object]


class DownloadError(Exception):
    """No mirror gave a file with the expected content."""


def fetch(
    url: str,
    dest: Path,
    *,
    timeout: float = 20.0,
    opener: Opener = urllib.request.urlopen,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Download ``url`` to ``dest`` atomically (a failed download leaves nothing behind)."""
    with atomic_path(dest) as tmp:
        with opener(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) if hasattr(response, "headers") else 0
            done, next_report = 0, 0.0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress and total and done / total >= next_report:
                    progress(f"  {dest.name}: {100 * done / total:3.0f}% of {total / 1e6:.1f} MB")
                    next_report += 0.25


def fetch_verified(
    name: str,
    mirrors: Sequence[str],
    dest: Path,
    verify: Callable[[Path], bool],
    *,
    attempts: int = 3,
    backoff: float = 1.0,
    opener: Opener = urllib.request.urlopen,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Try each mirror up to ``attempts`` times; keep the first download that ``verify`` accepts."""
    report = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    errors: dict[str, str] = {}  # last failure per mirror
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        for attempt in range(1, attempts + 1):
            report(f"downloading {url}")
            try:
                fetch(url, dest, opener=opener, progress=report)
            except urllib.error.HTTPError as exc:
                errors[mirror] = f"{url}: HTTP {exc.code}"
                break  # the mirror answered: retrying will not help
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors[mirror] = f"{url}: {getattr(exc, 'reason', exc)}"
                if attempt < attempts:
                    time.sleep(backoff * 2 ** (attempt - 1))
                continue
            if verify(dest):
                return
            dest.unlink(missing_ok=True)
            errors[mirror] = f"{url}: content does not match the expected checksum"
            break
    raise DownloadError("; ".join(errors.values()) or "no mirror configured")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
