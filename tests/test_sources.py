"""Every kind of source ends as the upstream layout under build/raw/<dataset>, or as a clear error and no output."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from imrestore.acquire import sources
from imrestore.acquire.sources import SourceConfig, acquire
from imrestore.errors import ImrestoreError
from layout_builders import write_gopro, write_sidd


@pytest.fixture(autouse=True)
def download_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DOWNLOAD_CACHE", tmp_path / "downloads")


def zip_tree(folder: Path, archive: Path, prefix: str = "") -> str:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder.parent).as_posix())
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def config(dataset: str, source: str, sha256: str | None = None, mirrors=()) -> SourceConfig:
    return SourceConfig.for_dataset(dataset, {"source": source, "sha256": sha256, "mirrors": list(mirrors)})


def test_url_source_resumes_a_cut_transfer_and_unpacks_byte_exact(tmp_path, http_server):
    original = write_gopro(tmp_path / "upstream")
    sha = zip_tree(original, http_server.root / "GOPRO_Large.zip")
    size = (http_server.root / "GOPRO_Large.zip").stat().st_size
    http_server.add_fault("GOPRO_Large.zip", cut_after_bytes=size // 3, times=1)
    root = acquire(config("gopro", http_server.url("GOPRO_Large.zip"), sha), tmp_path / "raw" / "gopro", progress=False)
    assert root == tmp_path / "raw" / "gopro" / "GOPRO_Large"
    assert files_of(root) == files_of(original)
    ranges = [r.range for r in http_server.requests_for("GOPRO_Large.zip")]
    assert ranges[0] is None and ranges[-1] == f"bytes={size // 3}-"
    assert sorted(p.name for p in (tmp_path / "raw" / "gopro").iterdir()) == ["GOPRO_Large"]


def test_a_mirror_is_used_when_the_main_url_fails(tmp_path, http_server):
    sha = zip_tree(write_sidd(tmp_path / "upstream"), http_server.root / "sidd.zip")
    cfg = config("sidd", http_server.url("gone/sidd.zip"), sha, mirrors=[http_server.url("sidd.zip")])
    root = acquire(cfg, tmp_path / "raw" / "sidd", progress=False)
    assert (root / "Scene_Instances.txt").is_file()


def test_without_a_pin_the_mirrors_are_not_tried_and_the_message_says_so(tmp_path, http_server):
    zip_tree(write_sidd(tmp_path / "upstream"), http_server.root / "sidd.zip")
    cfg = config("sidd", http_server.url("gone/sidd.zip"), None, mirrors=[http_server.url("sidd.zip")])
    with pytest.raises(ImrestoreError, match=r"(?s)404.*The 1 mirror\(s\) in download\.sidd\.mirrors were not tried: "
                                             r"with no sha256 pinned.*set download\.sidd\.source to a mirror"):
        acquire(cfg, tmp_path / "raw" / "sidd", progress=False)
    assert [r.path for r in http_server.requests] == ["gone/sidd.zip"] and not (tmp_path / "raw" / "sidd").exists()


def test_datasets_whose_urls_end_alike_keep_their_own_downloads(tmp_path, http_server):
    # Google Drive serves every file as `uc?id=…`: one name in a shared folder once made SIDD's run find GoPro's
    # verified archive there and refuse its own pin.
    for folder in ("g", "s"):
        (http_server.root / "drive" / folder).mkdir(parents=True)
    gopro_sha = zip_tree(write_gopro(tmp_path / "upstream"), http_server.root / "drive" / "g" / "uc")
    sidd_sha = zip_tree(write_sidd(tmp_path / "upstream"), http_server.root / "drive" / "s" / "uc")
    for dataset, folder, sha in (("gopro", "g", gopro_sha), ("sidd", "s", sidd_sha)):
        acquire(config(dataset, http_server.url(f"drive/{folder}/uc") + f"?id={dataset}", sha),
                tmp_path / "raw" / dataset, progress=False)
    downloads = tmp_path / "downloads"
    assert sorted(p.relative_to(downloads).as_posix() for p in downloads.rglob("*") if p.is_file()) == \
        ["gopro/uc", "sidd/uc"]
    assert hashlib.sha256((downloads / "sidd" / "uc").read_bytes()).hexdigest() == sidd_sha


def test_a_verified_archive_in_the_shared_folder_moves_to_its_datasets_folder(tmp_path, http_server):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    sha = zip_tree(write_gopro(tmp_path / "upstream"), downloads / "GOPRO_Large.zip")
    (downloads / "uc").write_bytes(b"another dataset's archive")  # not this pin's: left where it is
    root = acquire(config("gopro", http_server.url("GOPRO_Large.zip"), sha), tmp_path / "raw" / "gopro",
                   progress=False)
    assert (root / "train").is_dir() and http_server.requests == []  # the server has no such file: none was asked
    assert sorted(p.relative_to(downloads).as_posix() for p in downloads.rglob("*") if p.is_file()) == \
        ["gopro/GOPRO_Large.zip", "uc"]


def test_archive_in_wrapper_folder_is_found(tmp_path):
    sha = zip_tree(write_sidd(tmp_path / "upstream"), tmp_path / "sidd.zip", prefix="release/v1/")
    root = acquire(config("sidd", str(tmp_path / "sidd.zip"), sha), tmp_path / "raw" / "sidd", progress=False)
    assert root.name == "SIDD_Small_sRGB_Only" and len(list((root / "Data").iterdir())) == 3


def test_unpinned_url_reports_the_hash_to_pin(tmp_path, http_server):
    sha = zip_tree(write_sidd(tmp_path / "upstream"), http_server.root / "sidd.zip")
    with pytest.raises(ImrestoreError, match=f"no sha256 pinned.*{sha}"):
        acquire(config("sidd", http_server.url("sidd.zip")), tmp_path / "raw" / "sidd", progress=False)
    assert not (tmp_path / "raw" / "sidd").exists()


def test_checksum_mismatch_leaves_previous_output_untouched(tmp_path, http_server):
    zip_tree(write_gopro(tmp_path / "upstream"), http_server.root / "GOPRO_Large.zip")
    previous = tmp_path / "raw" / "gopro" / "GOPRO_Large" / "kept.txt"
    previous.parent.mkdir(parents=True)
    previous.write_text("earlier result")
    with pytest.raises(ImrestoreError, match="checksum mismatch.*expected sha256 0{64}, got [0-9a-f]{64}"):
        acquire(config("gopro", http_server.url("GOPRO_Large.zip"), "0" * 64), tmp_path / "raw" / "gopro",
                progress=False)
    assert previous.read_text() == "earlier result"
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["gopro"]


def test_wrong_layout_says_what_was_expected_and_leaves_nothing(tmp_path):
    original = write_gopro(tmp_path / "upstream")
    (original / "train").rename(original / "training")
    sha = zip_tree(original, tmp_path / "bad.zip")
    expected = (r"refusing to extract .*bad\.zip: expected GOPRO_Large/train/<SEQUENCE>/\{blur,blur_gamma,sharp\}/, "
                r"found GOPRO_Large/test/, GOPRO_Large/training/\. Nothing was extracted\.")
    with pytest.raises(ImrestoreError, match=expected):
        acquire(config("gopro", f"file://{tmp_path / 'bad.zip'}", sha), tmp_path / "raw" / "gopro", progress=False)
    assert not (tmp_path / "raw" / "gopro").exists()


def test_a_decompression_bomb_in_the_dataset_layout_is_refused_unextracted(tmp_path):
    """The reported case: one member of zeros named GOPRO_Large/train/zeros.bin, with its correct sha256."""
    bomb = tmp_path / "GOPRO_Large.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("GOPRO_Large/train/zeros.bin", "w") as member:
            for _ in range(64):
                member.write(bytes(1 << 20))
    sha = hashlib.sha256(bomb.read_bytes()).hexdigest()
    with pytest.raises(ImrestoreError, match=r"member 'GOPRO_Large/train/zeros\.bin' expands to 64\.0 MiB .*max_ratio"):
        acquire(config("gopro", str(bomb), sha), tmp_path / "raw" / "gopro", progress=False)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_a_stray_file_in_place_of_the_sequences_is_named_in_full(tmp_path):
    archive = tmp_path / "GOPRO_Large.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("GOPRO_Large/train/zeros.bin", b"\0" * 1000)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(ImrestoreError, match=r"found GOPRO_Large/train/zeros\.bin\. Nothing was extracted"):
        acquire(config("gopro", str(archive), sha), tmp_path / "raw" / "gopro", progress=False)


def test_an_archive_larger_than_the_dataset_cap_names_the_param(tmp_path):
    files = write_gopro(tmp_path / "upstream")
    sha = zip_tree(files, tmp_path / "GOPRO_Large.zip")
    section = {"source": str(tmp_path / "GOPRO_Large.zip"), "sha256": sha, "max_unpacked_gib": 1e-6}
    with pytest.raises(ImrestoreError, match=r"above the limit of 1\.0 KiB.*download\.gopro\.max_unpacked_gib in params\.yaml"):
        acquire(SourceConfig.for_dataset("gopro", section), tmp_path / "raw" / "gopro", progress=False)


def test_an_unquoted_digit_hash_in_params_says_to_quote_it():
    with pytest.raises(ImrestoreError, match=r"download\.gopro\.sha256 must be null or a quoted string of 64 hex digits \(YAML reads an unquoted "
                                             r"hash of digits as a number, so quote it\), found 123"):
        SourceConfig.for_dataset("gopro", {"source": "https://example.org/a.zip", "sha256": 123})


def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("GOPRO_Large/train/x/sharp/000001.png", b"x")
        zf.writestr("../../escaped.txt", b"owned")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(ImrestoreError, match="escaped.txt"):
        acquire(config("gopro", str(archive), sha), tmp_path / "raw" / "gopro", progress=False)
    assert not (tmp_path / "raw" / "gopro").exists() and not list(tmp_path.rglob("escaped.txt"))


def test_local_archive_must_be_pinned(tmp_path):
    sha = zip_tree(write_sidd(tmp_path / "upstream"), tmp_path / "sidd.zip")
    with pytest.raises(ImrestoreError, match=f"no sha256 pinned for .*sidd.zip; it has sha256 {sha}"):
        acquire(config("sidd", str(tmp_path / "sidd.zip")), tmp_path / "raw" / "sidd", progress=False)


def test_local_folder_is_copied_byte_exact(tmp_path):
    original = write_gopro(tmp_path / "upstream")
    root = acquire(config("gopro", str(tmp_path / "upstream")), tmp_path / "raw" / "gopro", progress=False)
    assert files_of(root) == files_of(original)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"source": "sample", "colour": 1}, "unknown key download.gopro.colour"),
        ({"source": "sample", "sha256": "abc"}, "download.gopro.sha256 must be null or a quoted string of 64 hex digits"),
        ({"source": ""}, "download.gopro.source must be 'sample', a URL or a path"),
        ({"source": "ftp://host/x.zip"}, "unsupported scheme 'ftp'"),
        ({"source": "/nowhere/GOPRO_Large.zip"}, "/nowhere/GOPRO_Large.zip does not exist"),
    ],
)
def test_bad_source_params_are_named(tmp_path, section, message):
    with pytest.raises(ImrestoreError, match=message.replace(".", r"\.").replace("(", r"\(")):
        acquire(SourceConfig.for_dataset("gopro", section), tmp_path / "raw" / "gopro", progress=False)
