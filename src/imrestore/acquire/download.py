"""Verified, resumable HTTP(S) download of large dataset archives.

The archives this pipeline starts from are big (GoPro_Large.zip is about 9 GB) and come from academic
servers that are slow, drop connections and sometimes move files. Each behaviour below exists for that:

- Bytes go to `<dest>.part` beside the final name, and the `.part` file is kept when anything fails, so
  the next call continues where the last one stopped instead of fetching 9 GB again. It is renamed to
  `dest` only after its sha256 matches the pinned one, so a file at `dest` is always a verified file, and a
  DVC stage that fails leaves no output that could be cached as a success.
- Resuming sends `Range: bytes=<n>-`. A 206 reply whose `Content-Range` starts at n is appended. A 200
  reply means the server ignores ranges, so the `.part` is truncated and the body is taken from byte 0. A
  416 reply means there is nothing after byte n: the `.part` is probably complete, so it is verified.
- Network trouble is retried with exponential backoff: refused or reset connections, timeouts, DNS
  failures, HTTP 5xx and 429, and bodies that end before their Content-Length. An attempt that grew the
  `.part` beyond anything seen before does not use up a retry, because on a flaky link a 9 GB file may
  need more reconnects than `retries` and each of them was worth it. Retries in a row without progress
  are what `retries` limits.
- Errors that waiting cannot fix (401, 403, 404, 410 and other 4xx, certificate failures) fail at once,
  with a message that says what the user can do.
- The sha256 is computed while the bytes arrive (and once over a `.part` left by an earlier run), so
  verifying a 9 GB archive does not cost a second pass over the disk. A missing pin keeps the complete
  `.part` and reports its hash, because the pipeline must never use data whose identity is not pinned in
  params.yaml, and the user should not have to download the file twice to pin it.
- Downloaded bytes are never deleted for disagreeing with the pin, because the pin may be the thing that is
  wrong: one mistyped character would otherwise cost a 9 GB download, twice. A finished download whose
  hash differs is kept as `<dest>.sha256-<its hash>` (a name that says what it holds, and that a resumed
  download will not append to), and `dest`, which only ever holds a file that matched an earlier pin, is
  left where it is and nothing is downloaded. The error names each file and its hash; pinning that hash
  uses the file with no download, and moving it aside makes the next run download afresh.
- Free space is checked before writing when the size is known, so a full disk is reported up front, with
  numbers, rather than as a write error after an hour.
"""

from __future__ import annotations

import contextlib
import hashlib
import http
import http.client
import os
import random
import re
import shutil
import socket
import ssl
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress, TaskID

from imrestore import __version__
from imrestore.atomic import remove
from imrestore.errors import ImrestoreError
from imrestore.progress import byte_columns, new_progress

__all__ = ["UnpinnedDownload", "download", "ensure_free_space"]

PART_SUFFIX = ".part"
FREE_SPACE_MARGIN_BYTES = 64 << 20  # room for the filesystem's own bookkeeping and whatever else runs
# Measured on ext4 (Linux VM): single 1 MiB writes now and then stall for over a second, 256 KiB writes
# did not in the same run; slicing costs nothing, so the chunk size read from the network can stay large.
WRITE_SLICE_BYTES = 256 << 10
HASH_BUFFERS = 4  # chunks in flight between receiving and hashing; 2 to 8 measured about the same
MAX_RETRY_DELAY_S = 60.0  # neither backoff nor a server's Retry-After should park a pipeline for longer
_GIB = float(1 << 30)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


class UnpinnedDownload(ImrestoreError):
    """The file arrived, but no sha256 was pinned to check it against; the message gives the hash to pin."""


class _Transient(Exception):
    """A failure that waiting and resuming can fix; `str()` is the reason shown after the last attempt."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------------------------------- public API


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest` (the final name), verify it against `sha256`, and return `dest`.

    Returns at once, without a request, when `dest`, a complete `<dest>.part` or a kept
    `<dest>.sha256-<pin>` already has the pinned hash; a `dest` with another hash is kept and refused,
    without a download (see the module docstring). `retries` is how many attempts may
    fail in a row before giving up; an attempt that adds bytes beyond the most seen so far starts the
    count afresh. The n-th retry in a row waits `backoff_s * 2**n` seconds (or the server's Retry-After,
    up to a minute). `timeout_s` bounds the connect and every read. With `sha256=None` the file is
    downloaded, kept as `.part`, and an ImrestoreError reports the hash to pin. Raises ImrestoreError for
    everything a user can act on.
    """
    _check_url(url)
    expected = _check_sha256(sha256, url)
    if retries < 1 or chunk_bytes < 1 or timeout_s <= 0 or backoff_s < 0:
        raise ImrestoreError(
            f"download settings for {url} must have retries >= 1, chunk_bytes >= 1, timeout_s > 0 and "
            f"backoff_s >= 0; got retries={retries}, chunk_bytes={chunk_bytes}, timeout_s={timeout_s}, "
            f"backoff_s={backoff_s}"
        )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _progress_display(progress) as bar:
        if dest.is_file():
            _check_verified_copy(url, dest, expected, bar)
            return dest
        if expected is not None and _adopt_kept_copy(dest, expected, bar):
            return dest
        with _PartFile(dest.with_name(dest.name + PART_SUFFIX), bar, chunk_bytes) as part:
            if expected is not None and part.size > 0 and part.hexdigest() == expected:
                os.replace(part.path, dest)  # an earlier run finished the body but not the rename
                return dest
            _fetch_with_retries(url, part, dest, retries, backoff_s, timeout_s, bar)
            return _verify_and_rename(url, part, dest, expected)


def ensure_free_space(directory: Path, needed_bytes: int, what: str) -> None:
    """Raise ImrestoreError unless the filesystem holding `directory` has `needed_bytes` free.

    `what` names the thing that needs the space, e.g. "downloading GoPro_Large.zip".
    """
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the directory may not exist yet; its filesystem does
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise ImrestoreError(
            f"not enough free space in {directory} for {what}: need {needed_bytes / _GIB:.2f} GiB, "
            f"{free / _GIB:.2f} GiB available; free some space or choose a directory on another disk"
        )


# ------------------------------------------------------------------------------------------ argument checks


def _check_url(url: str) -> None:
    # http.client refuses these only when the request is sent, as InvalidURL, which would read as a network
    # failure and be retried; a URL pasted from a web page with a space in it is the usual case.
    if any(char.isspace() or not char.isprintable() for char in url):
        raise ImrestoreError(f"expected a URL without spaces or control characters, got {url!r}; "
                             "write a space as %20")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError as err:  # e.g. an unclosed IPv6 bracket, or a port out of range
        raise ImrestoreError(f"expected a valid URL, got {url!r}: {err}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ImrestoreError(
            f"expected an http:// or https:// URL with a host name, got {url!r}; "
            "other protocols and local paths are not downloaded"
        )


def _check_sha256(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    if not isinstance(sha256, str):
        raise ImrestoreError(
            f"the sha256 pinned for {url} must be a quoted string of 64 hexadecimal characters, got the "
            f"{type(sha256).__name__} {sha256!r}: YAML reads an unquoted hash of digits as a number, so quote it"
        )
    normalised = str(sha256).strip().lower()
    if not _SHA256_HEX.match(normalised):
        raise ImrestoreError(
            f"the sha256 pinned for {url} must be 64 hexadecimal characters, got {sha256!r} "
            f"({len(str(sha256))} characters); copy it from `sha256sum <file>` or from the error that "
            "reported it"
        )
    return normalised


def _check_verified_copy(url: str, dest: Path, expected: str | None, bar: _Bar) -> None:
    """Return when `dest` is the pinned file; otherwise say what it is and keep it (it matched a pin once)."""
    actual = _hash_file(dest, hashlib.sha256(), bar, f"verifying {dest.name}").hexdigest()
    if expected is None:
        raise UnpinnedDownload(
            f"no sha256 pinned for {url}; {dest} exists and has sha256 {actual}. If you trust this source, "
            "pin it in params.yaml and run again"
        )
    if actual != expected:
        raise ImrestoreError(
            f"the sha256 pinned for {url} is {expected}, but {dest}, the copy an earlier run downloaded and "
            f"verified, has sha256 {actual}. Nothing was downloaded or deleted. If the pin has a typo, pin "
            f"{actual} again; if the publisher replaced the file, move {dest} aside and run again to download "
            "the new one"
        )


def kept_copy(dest: Path, sha256: str) -> Path:
    """Where a finished download whose hash disagreed with the pin is kept: named by the hash it has."""
    return dest.with_name(f"{dest.name}.sha256-{sha256}")


def _adopt_kept_copy(dest: Path, expected: str, bar: _Bar) -> bool:
    """Use a download kept earlier under its own hash, now that the pin names that hash (checked again)."""
    kept = kept_copy(dest, expected)
    if not kept.is_file():
        return False
    if _hash_file(kept, hashlib.sha256(), bar, f"verifying {kept.name}").hexdigest() != expected:
        return False  # its name lies (edited by hand?): leave it alone and download
    os.replace(kept, dest)
    return True


# ------------------------------------------------------------------------------------------ the .part file


class _PartFile:
    """The `.part` file and the running sha256 of exactly the bytes in it.

    Hashing while writing means a finished download is verified without reading it back. The hash runs
    on a worker thread (hashlib releases the GIL), so hashing one chunk overlaps receiving the next; the
    chunks rotate through a few buffers, and a buffer is handed out again only after its hash is done.
    A `.part` left by an earlier run is hashed once on open, and again only if its size no longer matches
    what was hashed (a write that failed half-way).
    """

    def __init__(self, path: Path, bar: _Bar, chunk_bytes: int) -> None:
        self.path = path
        self._bar = bar
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imrestore-sha256")
        self._pending: deque[tuple[Future[None], int]] = deque()  # (hash job, buffer index), oldest first
        self._buffers = [memoryview(bytearray(chunk_bytes)) for _ in range(HASH_BUFFERS)]
        self._next_buffer = 0
        self._rehash()

    def __enter__(self) -> _PartFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._hasher.shutdown(wait=True, cancel_futures=True)

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft()[0].result()

    def _rehash(self) -> None:
        self._drain()
        self._sha = hashlib.sha256()
        self.size = 0
        if self.path.is_file():
            self._sha = _hash_file(self.path, self._sha, self._bar, f"checking {self.path.name}")
            self.size = self.path.stat().st_size

    def sync(self) -> None:
        """Make the hash describe the file as it is on disk now."""
        on_disk = self.path.stat().st_size if self.path.is_file() else 0
        if on_disk != self.size:
            self._rehash()

    def hexdigest(self) -> str:
        self._drain()
        return self._sha.hexdigest()  # hashlib's digest does not end the running hash

    def truncate(self) -> None:
        self._drain()
        self.path.write_bytes(b"")
        self._sha = hashlib.sha256()
        self.size = 0

    @contextlib.contextmanager
    def appending(self) -> Iterator[_PartFile]:
        with self.path.open("ab") as self._file:
            yield self

    def free_buffer(self) -> memoryview:
        """A buffer to receive the next chunk into; pass the filled part of it to `write`."""
        index = self._next_buffer
        self._next_buffer = (index + 1) % len(self._buffers)
        while any(busy == index for _, busy in self._pending):  # its hash is queued: wait for it
            self._pending.popleft()[0].result()
        self._current_buffer = index
        return self._buffers[index]

    def write(self, chunk: memoryview) -> None:
        """Append `chunk`, a slice of the buffer `free_buffer` returned last, and queue it for hashing."""
        try:
            for start in range(0, len(chunk), WRITE_SLICE_BYTES):
                self._file.write(chunk[start : start + WRITE_SLICE_BYTES])
        except OSError as err:  # a disk error is not a network error: retrying would not help
            raise ImrestoreError(
                f"cannot write {self.path}: {err.strerror or err}; the bytes so far are kept and the next run "
                "resumes from them"
            ) from err
        self._pending.append((self._hasher.submit(self._sha.update, chunk), self._current_buffer))
        self.size += len(chunk)

    def delete(self) -> None:
        remove(self.path)


def _hash_file(path: Path, sha: hashlib._Hash, bar: _Bar, label: str = "") -> hashlib._Hash:
    """Feed the bytes of `path` into `sha` and return it; shows progress because 9 GB take a while."""
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    task = bar.start(label or f"hashing {path.name}", path.stat().st_size, 0)
    with path.open("rb", buffering=0) as file:
        while n := file.readinto(buffer):
            sha.update(view[:n])
            bar.advance(task, n)
    bar.finish(task)
    return sha


# ---------------------------------------------------------------------------------------------- transfer


@dataclass
class _Session:
    """What attempts for one file learn from each other."""

    url: str
    dest: Path
    timeout_s: float
    bar: _Bar
    use_ranges: bool = True  # False after a server answered a range with the wrong bytes
    validator: str | None = None  # ETag or Last-Modified, sent as If-Range so a changed file restarts


def _fetch_with_retries(
    url: str, part: _PartFile, dest: Path, retries: int, backoff_s: float, timeout_s: float, bar: _Bar
) -> None:
    """Make `part` hold the whole body, resuming after transient failures."""
    session = _Session(url, dest, timeout_s, bar)
    attempts = 0
    failures_in_a_row = 0
    most_bytes_seen = part.size
    while True:
        attempts += 1
        part.sync()
        try:
            _attempt(session, part)
            return
        except _Transient as err:
            if part.size > most_bytes_seen:  # progress: this attempt was worth making, do not count it
                most_bytes_seen = part.size
                failures_in_a_row = 0
            failures_in_a_row += 1
            if failures_in_a_row >= retries:
                raise ImrestoreError(f"could not download {url} after {attempts} attempts: {err}") from None
            delay = _retry_delay(backoff_s, failures_in_a_row - 1, err.retry_after_s)
            where = f"resuming at byte {part.size:,}" if part.size else "from the start"
            bar.note(f"{err}; retrying in {delay:.1f} s (attempt {attempts + 1}, {where})")
            time.sleep(delay)


def _retry_delay(backoff_s: float, retry_index: int, retry_after_s: float | None) -> float:
    # Jitter keeps many clients that failed together (one server restart) from returning together.
    delay = backoff_s * 2**retry_index * random.uniform(1.0, 1.1)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, MAX_RETRY_DELAY_S)


def _attempt(session: _Session, part: _PartFile) -> None:
    """One request: append the rest of the body to `part`, or raise _Transient / ImrestoreError."""
    offset = part.size if session.use_ranges else 0
    try:
        response = urllib.request.urlopen(_request(session, offset), timeout=session.timeout_s)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset > 0:
            return _range_not_satisfiable(session, part, err)
        raise _http_failure(session, err) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _network_failure(session, err) from None
    with response:
        start, length = _body_range(session, response, offset)
        if start == 0:
            part.truncate()  # the server sends the whole file (it ignores ranges, or the file changed)
            session.validator = _validator(response)
        if length is not None:
            ensure_free_space(part.path.parent, length + FREE_SPACE_MARGIN_BYTES, f"downloading {session.url}")
        _receive(session, response, part, length)


def _range_not_satisfiable(session: _Session, part: _PartFile, err: urllib.error.HTTPError) -> None:
    """416: there is nothing after the bytes we have. Usually the .part is complete and the checksum
    decides; if the server says the file is shorter than the .part, the .part is not this file."""
    match = re.match(r"^\s*bytes\s+\*/(\d+)\s*$", err.headers.get("Content-Range", ""))
    if match and int(match[1]) != part.size:
        part.truncate()
        raise _Transient(f"the server's file has {match[1]} bytes but the partial download has more; starting over")


def _request(session: _Session, offset: int) -> urllib.request.Request:
    headers = {
        "User-Agent": f"imrestore/{__version__}",
        "Accept-Encoding": "identity",  # byte ranges and Content-Length must refer to the file itself
    }
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        if session.validator:
            headers["If-Range"] = session.validator
    return urllib.request.Request(session.url, headers=headers)


def _validator(response: http.client.HTTPResponse) -> str | None:
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range only accepts strong validators
        return etag
    return response.headers.get("Last-Modified")


def _body_range(session: _Session, response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file and how many bytes it has (None if the server does not say)."""
    declared = response.headers.get("Content-Length")
    length = int(declared) if declared and declared.strip().isdigit() else None
    if response.status == 200:
        return 0, length
    if response.status != 206:
        raise ImrestoreError(
            f"expected HTTP 200 or 206 from {session.url}, got {response.status} {response.reason}; "
            "the server does not serve this file as a plain download"
        )
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    start, last = (int(match[1]), int(match[2])) if match else (-1, -1)
    if start != offset or last < start or (length is not None and length != last - start + 1):
        # Appending bytes from the wrong place would corrupt the file; start over without ranges.
        session.use_ranges = False
        raise _Transient(
            f"asked {urllib.parse.urlsplit(session.url).hostname} for bytes from {offset}, got "
            f"Content-Range {response.headers.get('Content-Range')!r} with Content-Length {declared!r}"
        )
    return start, last - start + 1


def _verify_and_rename(url: str, part: _PartFile, dest: Path, expected: str | None) -> Path:
    part.sync()
    actual = part.hexdigest()
    if expected is None:
        raise UnpinnedDownload(
            f"no sha256 pinned for {url}; the downloaded file has sha256 {actual}. If you trust this source, "
            f"pin it in params.yaml and run again (the file is kept as {part.path}, it will not be downloaded "
            "twice)"
        )
    if actual != expected:
        kept = kept_copy(dest, actual)
        os.replace(part.path, kept)  # out of the way of the next download, which must not append to it
        raise ImrestoreError(
            f"checksum mismatch: expected sha256 {expected}, got {actual} ({part.size:,} bytes), kept as {kept}. "
            f"If the pin has a typo and {actual} is right, pin that and run again: the kept file is used "
            "without a download. If not, confirm the hash with the dataset's publisher; deleting the kept "
            "file is then safe"
        )
    os.replace(part.path, dest)
    return dest


def _receive(
    session: _Session, response: http.client.HTTPResponse, part: _PartFile, length: int | None
) -> None:
    """Copy the body into `part`, chunk by chunk, until `length` bytes arrived or the server ends it."""
    received = 0
    total = None if length is None else part.size + length
    task = session.bar.start(session.dest.name, total, part.size)
    try:
        with part.appending():
            while length is None or received < length:
                buffer = part.free_buffer()
                try:
                    n = response.readinto(buffer)
                except (OSError, http.client.HTTPException) as err:
                    raise _network_failure(session, err) from None
                if n == 0:
                    break
                part.write(buffer[:n])
                received += n
                session.bar.advance(task, n)
    finally:
        session.bar.finish(task)
    if length is not None and received < length:
        raise _Transient(f"the connection closed after {received} of {length} bytes")


# --------------------------------------------------------------------------------------- failure messages

_FATAL_ADVICE = {
    401: "the server wants credentials; download the file manually (see README) and place it at {dest}",
    403: (
        "the server refuses access; the dataset may require a login or accepting its terms, so download it "
        "manually in a browser and place it at {dest}, or use a mirror listed in README"
    ),
    404: "the file is not at this address; check the URL (mirrors are listed in README)",
    410: "the file was removed from this address; use a mirror listed in README",
}


def _http_failure(session: _Session, err: urllib.error.HTTPError) -> Exception:
    """A _Transient for statuses that waiting can fix, otherwise an ImrestoreError with advice."""
    phrase = _status_phrase(err.code, err.reason)
    if err.code == 429 or err.code >= 500:
        return _Transient(f"HTTP {err.code} {phrase}", _retry_after_s(err.headers.get("Retry-After")))
    advice = _FATAL_ADVICE.get(err.code)
    if advice is None and 300 <= err.code < 400:
        advice = "the redirect could not be followed (a loop, or no Location); check the URL"
    if advice is None:
        advice = "the server refused the request; this does not go away by retrying, so check the URL"
    return ImrestoreError(f"HTTP {err.code} {phrase} for {session.url}: {advice.format(dest=session.dest)}")


def _status_phrase(code: int, reason: object) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return str(reason)


def _retry_after_s(header: str | None) -> float | None:
    # Only the delay-seconds form; an HTTP date is rare for downloads and the backoff covers it.
    return float(header) if header and header.strip().isdigit() else None


def _network_failure(session: _Session, err: BaseException) -> Exception:
    """A _Transient naming the host and what went wrong; certificate problems are final."""
    parts = urllib.parse.urlsplit(session.url)
    host = parts.netloc.rpartition("@")[2]
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, ssl.SSLCertVerificationError):
        return ImrestoreError(
            f"the TLS certificate of {host} could not be verified for {session.url}: {reason.verify_message}; "
            "the connection may be intercepted, or the system's CA certificates are out of date"
        )
    if isinstance(reason, socket.gaierror):
        return _Transient(f"cannot reach host {host}: its name does not resolve ({reason.strerror})")
    if isinstance(reason, ConnectionRefusedError):
        return _Transient(f"cannot reach host {host}: connection refused")
    if isinstance(reason, TimeoutError):
        return _Transient(f"no data from host {host} within {session.timeout_s:g} s (timed out)")
    if isinstance(reason, http.client.IncompleteRead):
        return _Transient(f"the connection to {host} closed in the middle of the body")
    if isinstance(reason, ConnectionError):
        return _Transient(f"the connection to {host} was lost: {reason.strerror or reason}")
    if isinstance(reason, OSError) and reason.strerror:
        return _Transient(f"cannot reach host {host}: {reason.strerror}")
    return _Transient(f"network error talking to {host}: {reason}")


# ----------------------------------------------------------------------------------------------- progress


class _Bar:
    """Progress display for downloads and hashing; the base class shows nothing (progress=False)."""

    def start(self, label: str, total: int | None, completed: int) -> TaskID | None:
        return None

    def advance(self, task: TaskID | None, n: int) -> None:
        pass

    def finish(self, task: TaskID | None) -> None:
        pass

    def note(self, message: str) -> None:
        pass


_NO_BAR = _Bar()


class _RichBar(_Bar):
    """One bar per label; a retry resets its bar rather than stacking a new one under it."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def start(self, label: str, total: int | None, completed: int) -> TaskID | None:
        # A resumed download starts its bar at the bytes already on disk, so the ETA is for what is left.
        if label in self._tasks:
            self._progress.reset(self._tasks[label], total=total, completed=completed)
        else:
            self._tasks[label] = self._progress.add_task(label, total=total, completed=completed)
        return self._tasks[label]

    def advance(self, task: TaskID | None, n: int) -> None:
        if task is not None:
            self._progress.advance(task, n)

    def note(self, message: str) -> None:
        # Printed above the bars, so a pause for a retry is explained rather than looking like a hang.
        self._progress.console.print(message, style="yellow", markup=False, highlight=False)


@contextlib.contextmanager
def _progress_display(enabled: bool) -> Iterator[_Bar]:
    if not enabled:
        yield _NO_BAR
        return
    with new_progress(*byte_columns()) as progress:
        yield _RichBar(progress)
