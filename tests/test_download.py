"""Behaviour of `imrestore.acquire.download` against a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from imrestore.acquire import download as download_module
from imrestore.acquire.download import download, ensure_free_space
from imrestore.atomic import sha256_file
from imrestore.errors import ImrestoreError
import imrestore
from loopback_http import LoopbackServer

SIZE = 3 * 1024 * 1024 + 12345  # not a multiple of the chunk size, so the last chunk is short
CHUNK = 64 * 1024
FAST = {"backoff_s": 0.01, "timeout_s": 5.0, "chunk_bytes": CHUNK, "progress": False}

pytestmark = pytest.mark.timeout(60)  # every test talks to sockets; none may hang the suite


@pytest.fixture
def archive(http_server: LoopbackServer) -> tuple[str, bytes, str]:
    """A random file on the server: (name, content, sha256)."""
    data = os.urandom(SIZE)
    (http_server.root / "archive.zip").write_bytes(data)
    return "archive.zip", data, hashlib.sha256(data).hexdigest()


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_full_download_verifies_and_renames(http_server, archive, tmp_path):
    name, data, digest = archive
    dest = tmp_path / "out" / "archive.zip"

    assert download(http_server.url(name), dest, sha256=digest, **FAST) == dest

    assert dest.read_bytes() == data
    assert not _part(dest).exists()
    [request] = http_server.requests_for(name)
    assert request.range is None and request.status == 200 and request.bytes_sent == SIZE
    assert request.headers["User-Agent"] == f"imrestore/{imrestore.__version__}"


def test_sha256_is_compared_case_insensitively(http_server, archive, tmp_path):
    name, data, digest = archive
    dest = download(http_server.url(name), tmp_path / "a.zip", sha256=digest.upper(), **FAST)
    assert dest.read_bytes() == data


def test_verified_dest_makes_no_request(http_server, archive, tmp_path):
    name, data, digest = archive
    dest = tmp_path / "archive.zip"
    dest.write_bytes(data)

    assert download(http_server.url(name), dest, sha256=digest, **FAST) == dest
    assert http_server.requests == []


def test_a_changed_pin_keeps_the_verified_copy_and_downloads_nothing(http_server, archive, tmp_path):
    """A one-character typo in the pin must not cost the verified archive (9 GB for GoPro) and a download."""
    name, data, digest = archive
    dest = download(http_server.url(name), tmp_path / "archive.zip", sha256=digest, **FAST)
    typo = ("1" if digest[0] != "1" else "2") + digest[1:]

    with pytest.raises(ImrestoreError) as caught:
        download(http_server.url(name), dest, sha256=typo, **FAST)
    assert str(caught.value) == (
        f"the sha256 pinned for {http_server.url(name)} is {typo}, but {dest}, the copy an earlier run downloaded "
        f"and verified, has sha256 {digest}. Nothing was downloaded or deleted. If the pin has a typo, pin "
        f"{digest} again; if the publisher replaced the file, move {dest} aside and run again to download the "
        "new one"
    )
    assert dest.read_bytes() == data and len(http_server.requests_for(name)) == 1

    assert download(http_server.url(name), dest, sha256=digest, **FAST) == dest  # the pin corrected
    assert len(http_server.requests_for(name)) == 1


def test_complete_part_is_renamed_without_request(http_server, archive, tmp_path):
    name, data, digest = archive
    dest = tmp_path / "archive.zip"
    _part(dest).write_bytes(data)

    download(http_server.url(name), dest, sha256=digest, **FAST)
    assert dest.read_bytes() == data and not _part(dest).exists()
    assert http_server.requests == []


def test_interrupted_transfer_resumes_with_range(http_server, archive, tmp_path):
    name, data, digest = archive
    cut = int(SIZE * 0.4)
    http_server.add_fault(name, cut_after_bytes=cut, times=1)
    dest = tmp_path / "archive.zip"

    download(http_server.url(name), dest, sha256=digest, **FAST)

    assert dest.read_bytes() == data
    first, second = http_server.requests_for(name)
    assert (first.range, first.bytes_sent) == (None, cut)
    assert (second.range, second.status) == (f"bytes={cut}-", 206)
    assert http_server.bytes_sent(name) < 1.5 * SIZE


def test_connection_reset_mid_body_resumes(http_server, archive, tmp_path):
    name, data, digest = archive
    http_server.add_fault(name, cut_after_bytes=SIZE // 3, reset=True, times=1)

    dest = download(http_server.url(name), tmp_path / "archive.zip", sha256=digest, **FAST)
    assert dest.read_bytes() == data
    # A reset may discard bytes still in flight, so the client resumes from whatever reached it, maybe nothing.
    first, last = http_server.requests_for(name)
    assert (last.range, last.status) == (None, 200) or (last.range.startswith("bytes=") and last.status == 206)


def test_part_is_kept_across_calls_and_resumed(http_server, archive, tmp_path):
    name, data, digest = archive
    cut = SIZE // 2
    http_server.add_fault(name, cut_after_bytes=cut, times=1)
    dest = tmp_path / "archive.zip"

    with pytest.raises(ImrestoreError, match=r"after 1 attempts: the connection closed after \d+ of \d+ bytes"):
        download(http_server.url(name), dest, sha256=digest, retries=1, **FAST)
    assert _part(dest).stat().st_size == cut and not dest.exists()

    download(http_server.url(name), dest, sha256=digest, **FAST)
    assert dest.read_bytes() == data
    assert http_server.requests_for(name)[-1].range == f"bytes={cut}-"


def test_attempts_that_make_progress_do_not_use_up_retries(http_server, archive, tmp_path):
    name, data, digest = archive
    http_server.add_fault(name, cut_after_bytes=SIZE // 5, times=6)  # six cuts, each one a fifth further

    dest = download(http_server.url(name), tmp_path / "archive.zip", sha256=digest, retries=2, **FAST)
    assert dest.read_bytes() == data
    assert len(http_server.requests_for(name)) == 6


def test_server_ignoring_range_restarts_cleanly(http_server, archive, tmp_path):
    name, data, digest = archive
    http_server.add_fault(name, cut_after_bytes=SIZE // 3, ignore_range=True, times=1)
    http_server.add_fault(name, ignore_range=True)
    dest = tmp_path / "archive.zip"

    download(http_server.url(name), dest, sha256=digest, **FAST)

    assert dest.read_bytes() == data
    first, second = http_server.requests_for(name)
    assert second.range == f"bytes={SIZE // 3}-" and second.status == 200  # asked to resume, got all of it


def test_short_body_is_retried(http_server, archive, tmp_path):
    name, data, digest = archive
    http_server.add_fault(name, fake_content_length=SIZE + 1000, times=1)  # claims more than it sends

    dest = download(http_server.url(name), tmp_path / "archive.zip", sha256=digest, **FAST)
    assert dest.read_bytes() == data
    assert http_server.requests_for(name)[-1].range == f"bytes={SIZE}-"  # the body was all there: 416


@pytest.mark.parametrize("status", [503, 500, 429])
def test_transient_status_is_retried(http_server, archive, tmp_path, status):
    name, data, digest = archive
    http_server.add_fault(name, fail_status=status, times=1)

    dest = download(http_server.url(name), tmp_path / "archive.zip", sha256=digest, **FAST)
    assert dest.read_bytes() == data
    assert [r.status for r in http_server.requests_for(name)] == [status, 200]


def test_persistent_503_gives_up_after_retries(http_server, archive, tmp_path):
    name, _, digest = archive
    http_server.add_fault(name, fail_status=503)

    with pytest.raises(ImrestoreError) as caught:
        download(http_server.url(name), tmp_path / "a.zip", sha256=digest, retries=3, **FAST)
    assert str(caught.value) == (
        f"could not download {http_server.url(name)} after 3 attempts: HTTP 503 Service Unavailable"
    )
    assert len(http_server.requests_for(name)) == 3


def test_read_timeout_is_retried(http_server, archive, tmp_path):
    name, data, digest = archive
    http_server.add_fault(name, stall_s=30.0, times=1)  # headers, then silence (until the server closes)

    dest = download(
        http_server.url(name), tmp_path / "a.zip", sha256=digest, backoff_s=0.01, timeout_s=0.5,
        chunk_bytes=CHUNK, progress=False,
    )
    assert dest.read_bytes() == data
    assert len(http_server.requests_for(name)) >= 2  # one stalled, then success (more only on a very busy machine)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, r"HTTP 404 Not Found for http://\S+/archive.zip: the file is not at this address; check the URL"),
        (403, r"HTTP 403 Forbidden for http://\S+/archive.zip: .*login.*download it manually"),
        (401, r"HTTP 401 Unauthorized for http://\S+/archive.zip: the server wants credentials"),
        (410, r"HTTP 410 Gone for http://\S+/archive.zip: the file was removed"),
        (400, r"HTTP 400 Bad Request for http://\S+/archive.zip: .*not go away by retrying"),
    ],
)
def test_client_errors_fail_at_once(http_server, archive, tmp_path, status, expected):
    name, _, digest = archive
    http_server.add_fault(name, fail_status=status)

    with pytest.raises(ImrestoreError, match=expected):
        download(http_server.url(name), tmp_path / "a.zip", sha256=digest, **FAST)
    assert len(http_server.requests_for(name)) == 1


def test_missing_file_is_a_404(http_server, tmp_path):
    with pytest.raises(ImrestoreError, match="HTTP 404 Not Found.*mirrors are listed in README"):
        download(http_server.url("nope.zip"), tmp_path / "a.zip", sha256="0" * 64, **FAST)


def test_unreachable_host_fails_after_retries(tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/archive.zip"

    with pytest.raises(ImrestoreError) as caught:
        download(url, tmp_path / "a.zip", sha256="0" * 64, retries=3, **FAST)
    assert str(caught.value) == (
        f"could not download {url} after 3 attempts: cannot reach host 127.0.0.1:{port}: connection refused"
    )
    assert not (tmp_path / "a.zip").exists()


def test_checksum_mismatch_keeps_the_bytes_under_their_hash_for_a_corrected_pin(http_server, archive, tmp_path):
    name, data, digest = archive
    wrong = hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "archive.zip"
    kept = tmp_path / f"archive.zip.sha256-{digest}"

    with pytest.raises(ImrestoreError) as caught:
        download(http_server.url(name), dest, sha256=wrong, **FAST)
    assert str(caught.value).startswith(
        f"checksum mismatch: expected sha256 {wrong}, got {digest} ({SIZE:,} bytes), kept as {kept}. If the pin "
        f"has a typo and {digest} is right, pin that and run again: the kept file is used without a download."
    )
    assert not dest.exists() and not _part(dest).exists() and kept.read_bytes() == data

    # Still wrong: the kept file is not the pinned one, so the next run downloads afresh beside it.
    with pytest.raises(ImrestoreError, match="checksum mismatch"):
        download(http_server.url(name), dest, sha256=wrong, **FAST)
    assert [r.status for r in http_server.requests_for(name)] == [200, 200]

    download(http_server.url(name), dest, sha256=digest, **FAST)
    assert dest.read_bytes() == data and not kept.exists()
    assert len(http_server.requests_for(name)) == 2  # the corrected pin used the kept bytes


def test_a_kept_copy_whose_name_lies_is_not_used(http_server, archive, tmp_path):
    name, data, digest = archive
    dest = tmp_path / "archive.zip"
    kept = tmp_path / f"archive.zip.sha256-{digest}"
    kept.write_bytes(b"edited by hand")

    download(http_server.url(name), dest, sha256=digest, **FAST)
    assert dest.read_bytes() == data and kept.read_bytes() == b"edited by hand"


def test_an_unquoted_hash_of_digits_is_reported_as_needing_quotes(http_server, archive, tmp_path):
    name, _, _ = archive
    with pytest.raises(ImrestoreError, match=r"must be a quoted string .* got the int 1234: .* so quote it"):
        download(http_server.url(name), tmp_path / "a.zip", sha256=1234, **FAST)  # type: ignore[arg-type]
    assert http_server.requests == []


def test_unpinned_sha256_keeps_the_file_and_reports_its_hash(http_server, archive, tmp_path):
    name, data, digest = archive
    dest = tmp_path / "archive.zip"

    with pytest.raises(ImrestoreError, match=f"no sha256 pinned for .*has sha256 {digest}.*pin it in params.yaml"):
        download(http_server.url(name), dest, sha256=None, **FAST)
    assert _part(dest).read_bytes() == data and not dest.exists()

    # Still unpinned: the server is only asked for bytes past the end (416), the body is not sent again.
    with pytest.raises(ImrestoreError, match=f"has sha256 {digest}"):
        download(http_server.url(name), dest, sha256=None, **FAST)
    assert http_server.requests_for(name)[-1].status == 416

    bytes_before = http_server.bytes_sent(name)
    download(http_server.url(name), dest, sha256=digest, **FAST)
    assert dest.read_bytes() == data and not _part(dest).exists()
    assert http_server.bytes_sent(name) == bytes_before
    assert len(http_server.requests_for(name)) == 2  # the pinned call made no request at all


def test_part_longer_than_the_file_starts_over(http_server, archive, tmp_path):
    name, data, digest = archive
    dest = tmp_path / "archive.zip"
    _part(dest).write_bytes(data + b"junk from another file")

    download(http_server.url(name), dest, sha256=digest, **FAST)
    assert dest.read_bytes() == data
    assert [r.status for r in http_server.requests_for(name)] == [416, 200]


def test_free_space_is_checked_before_writing(http_server, archive, tmp_path, monkeypatch):
    name, _, digest = archive
    monkeypatch.setattr(download_module, "FREE_SPACE_MARGIN_BYTES", 1 << 60)  # an exabyte of headroom
    dest = tmp_path / "archive.zip"

    with pytest.raises(ImrestoreError, match=rf"not enough free space in {tmp_path} for downloading http://"):
        download(http_server.url(name), dest, sha256=digest, **FAST)
    assert not dest.exists() and _part(dest).stat().st_size == 0
    assert len(http_server.requests_for(name)) == 1  # a full disk is not retried


def test_ensure_free_space_reports_directory_and_sizes(tmp_path):
    ensure_free_space(tmp_path, 1, "a tiny file")
    with pytest.raises(ImrestoreError) as caught:
        ensure_free_space(tmp_path / "not" / "yet", 1 << 60, "an exabyte")
    message = str(caught.value)
    assert f"in {tmp_path / 'not' / 'yet'} for an exabyte: need 1073741824.00 GiB" in message
    assert "GiB available" in message


@pytest.mark.parametrize("bad", ["abc", "0" * 63, "g" * 64, "0" * 65, ""])
def test_bad_sha256_is_rejected_before_any_request(http_server, archive, tmp_path, bad):
    name, _, _ = archive
    with pytest.raises(ImrestoreError, match="must be 64 hexadecimal characters"):
        download(http_server.url(name), tmp_path / "a.zip", sha256=bad, **FAST)
    assert http_server.requests == []


@pytest.mark.parametrize("url", ["ftp://example.org/a.zip", "file:///etc/passwd", "/tmp/a.zip", "http:///a.zip"])
def test_only_http_urls_are_accepted(tmp_path, url):
    with pytest.raises(ImrestoreError, match="expected an http:// or https:// URL"):
        download(url, tmp_path / "a.zip", sha256="0" * 64, **FAST)


@pytest.mark.parametrize("url, expected", [
    ("{base}/GOPRO Large.zip", "expected a URL without spaces or control characters, got .*write a space as %20"),
    ("{base}/GOPRO_Large.zip\n", "expected a URL without spaces or control characters"),
    ("http://[::1/GOPRO_Large.zip", r"expected a valid URL, got 'http://\[::1/GOPRO_Large\.zip': Invalid IPv6 URL"),
    ("http://127.0.0.1:99999/a.zip", "expected a valid URL, got .*Port out of range"),
])
def test_a_malformed_url_is_refused_at_once_by_name(http_server, tmp_path, url, expected):
    # http.client refuses such a URL only when it sends the request, which once read as a network error to retry.
    url = url.format(base=f"http://{http_server.host}:{http_server.port}")
    with pytest.raises(ImrestoreError, match=expected):
        download(url, tmp_path / "a.zip", sha256="0" * 64, retries=5, backoff_s=10.0, progress=False)
    assert http_server.requests == []


def test_progress_bar_runs(http_server, archive, tmp_path):
    name, data, digest = archive
    http_server.add_fault(name, cut_after_bytes=SIZE // 2, times=1)
    dest = download(http_server.url(name), tmp_path / "a.zip", sha256=digest, backoff_s=0.01, chunk_bytes=CHUNK)
    assert dest.read_bytes() == data


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3 * (1 << 20) + 7)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
