"""Downloading dataset archives: resumable, retried, checksummed.

``download`` fetches an http(s) or file:// URL to ``dest`` through ``dest.part``:

- a leftover ``.part`` is resumed with an HTTP ``Range`` request; a server that ignores Range (answers 200) makes
  the download restart from zero, and a 416 answer means the part is already complete (or stale, then restart);
- connection errors, timeouts, 5xx / 408 / 429 answers and bodies shorter than their Content-Length are retried
  with exponential backoff; attempts that make new progress do not use up the retry budget;
- an HTML answer (a login page, an error page served with status 200) is refused: it is never a dataset archive;
- the finished file's SHA-256 is checked when one is given; a mismatch removes the file, so nothing wrong is left
  under ``dest``. Only a verified (or unchecked) file is renamed to ``dest``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from fomoflux.errors import DataError, DownloadError
from fomoflux.io import write_text
from fomoflux.progress import progress as make_progress

CHUNK = 1 << 20
USER_AGENT = "fomoflux-download/1"
_RETRY_STATUS = {408, 429}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
# One line of sha256sum output: the digest, a space, ' ' (text mode) or '*' (binary mode), the file name.
_SHA256SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


class _Retry(Exception):
    """A failure worth another attempt (the message says what happened)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith(b"<!doctype") or start.startswith(b"<html")


def _copy_body(response: BinaryIO, out: BinaryIO, bar, url: str, check_html: bool) -> int:
    """Stream the response body to ``out``; returns the number of bytes written."""
    written = 0
    first = True
    while True:
        try:
            block = response.read(CHUNK)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            raise _Retry(f"connection lost after {written} bytes ({exc.__class__.__name__})") from exc
        if not block:
            return written
        if first and check_html and _looks_like_html(block):
            raise DownloadError(f"{url} returned an HTML page, not a dataset archive (a login or error page?)")
        first = False
        out.write(block)
        written += len(block)
        bar.advance(len(block))


def _attempt(url: str, part: Path, timeout: float, bar) -> None:
    """One request: appends to ``part`` (resuming) or rewrites it. Raises _Retry for transient failures."""
    scheme = urllib.parse.urlsplit(url).scheme
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset and scheme in ("http", "https"):
        headers["Range"] = f"bytes={offset}-"
    else:
        offset = 0  # file:// has no ranges; copying again is cheap
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                # Nothing left past our offset: the part is complete if it has the server's full length.
                match = _UNSATISFIED_RANGE.match(exc.headers.get("Content-Range", "") or "")
                if match and int(match.group(1)) == offset:
                    return
                part.unlink(missing_ok=True)
                raise _Retry("server rejected the resume range; restarting from zero") from None
            if exc.code >= 500 or exc.code in _RETRY_STATUS:
                raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError) or scheme == "file":
            raise DownloadError(f"{url}: {exc.reason}") from None
        raise _Retry(f"cannot connect ({exc.reason})") from exc
    except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
        raise _Retry(f"{exc.__class__.__name__}: {exc}") from exc

    with response:
        status = getattr(response, "status", None) or 200
        content_type = (response.headers.get("Content-Type") or "").lower()
        if content_type.startswith("text/html"):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} returned an HTML page (Content-Type {content_type}), not a dataset archive")
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        mode = "wb"
        total = None
        if offset and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
            if match and int(match.group(1)) == offset:
                mode = "ab"
                if match.group(3) != "*":
                    total = int(match.group(3))
            else:
                # A range other than the one asked for: take nothing from it and start over.
                part.unlink(missing_ok=True)
                raise _Retry(f"server answered range {response.headers.get('Content-Range')!r} for offset {offset}")
        if mode == "wb":
            offset = 0
            total = expected
        bar.restart(offset, total)
        try:
            with open(part, mode) as out:
                written = _copy_body(response, out, bar, url, check_html=(mode == "wb"))
                out.flush()
                os.fsync(out.fileno())
        except DownloadError:
            part.unlink(missing_ok=True)  # an HTML body is no start of the archive
            raise
        if expected is not None and written < expected:
            raise _Retry(f"body truncated: {written} of {expected} bytes")


def download(url: str, dest: Path, sha256: str | None, *, retries: int = 3, timeout: float = 30,
             backoff: float = 1.0) -> str:
    """Download ``url`` to ``dest`` and return the file's SHA-256 hex digest.

    ``retries`` is the number of further attempts after the first failure (attempts that gain bytes are free);
    the n-th retry waits ``backoff * 2**(n-1)`` seconds. An existing ``dest`` whose checksum matches is kept.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and expected and sha256_file(dest) == expected:
        return expected
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (http, https or file)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")

    failures = 0
    best = part.stat().st_size if part.exists() else 0
    # tqdm's bar on a terminal, timestamped lines every 30 s in the job's log (fomoflux.progress)
    with make_progress(None, f"download {dest.name}", unit="B", interval_s=30.0, unit_scale=True,
                       unit_divisor=1024) as bar:
        while True:
            try:
                _attempt(url, part, timeout, bar)
                break
            except _Retry as reason:
                size = part.stat().st_size if part.exists() else 0
                if size > best:
                    best = size  # progress: a flaky but working server gets as many attempts as it needs
                    continue
                failures += 1
                if failures > retries:
                    raise DownloadError(f"{url}: giving up after {failures} failed attempt(s): {reason}") from None
                wait = backoff * 2 ** (failures - 1)
                bar.message(f"download {url}: {reason}; retry {failures}/{retries} in {wait:.1f}s")
                time.sleep(wait)

    actual = sha256_file(part)
    if expected and actual != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: SHA-256 mismatch: expected {expected}, got {actual} (file removed)")
    os.replace(part, dest)
    return actual


def _read_record(record: Path) -> tuple[str, str]:
    """(digest, file name) from a one-line sha256sum record; DataError naming the record when it is malformed."""
    lines = [line for line in record.read_text().splitlines() if line.strip()]
    match = _SHA256SUM_LINE.fullmatch(lines[0]) if len(lines) == 1 else None
    if match is None:
        raise DataError(f"checksum record {record} is not one '<sha256>  <filename>' line (sha256sum format)")
    return match.group(1).lower(), match.group(2)


def verify_or_record(path: Path, record: Path, *, digest: str | None = None) -> str:
    """Check ``path`` against its checksum record, or write the record when there is none; returns the SHA-256.

    ``record`` holds ``"<sha256>  <filename>\n"`` (what ``sha256sum`` writes, so ``sha256sum -c`` can check it from
    the file's folder). The first call (e.g. right after the first download of a release without published
    checksums) writes it atomically; later calls recompute the digest and raise DataError naming the file, both
    digests and the record when they differ, or when the record names another file.

    ``digest``: the file's SHA-256 when the caller has just computed it (``download`` returns it), so that a
    many-GB archive is not read a second time.
    """
    path, record = Path(path), Path(record)
    if not path.is_file():
        raise DataError(f"cannot checksum {path}: no such file")
    actual = digest.lower() if digest else sha256_file(path)
    if not record.exists():
        write_text(record, f"{actual}  {path.name}\n")
        return actual
    expected, name = _read_record(record)
    if name != path.name:
        raise DataError(f"checksum record {record} is for {name!r}, not for {path}")
    if actual != expected:
        raise DataError(f"{path} has SHA-256 {actual} but its record {record} says {expected} (file changed or "
                        f"corrupt; delete the record only if the new file is known to be right)")
    return actual
