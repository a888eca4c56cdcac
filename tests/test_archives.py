"""Safe extraction: real archives built with zipfile/tarfile in tmp_path, good and hostile."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from imrestore.acquire.archives import _ByteBudget, _Limits, _Member, extract_archive
from imrestore.atomic import current_umask
from imrestore.errors import ImrestoreError

# Nested dirs, an empty file, incompressible and highly compressible data: what a dataset archive holds.
TREE = {
    "GOPRO_Large/train/GOPR0372_07_00/blur/000047.png": os.urandom(70_000),
    "GOPRO_Large/train/GOPR0372_07_00/sharp/000047.png": bytes(range(256)) * 300,
    "GOPRO_Large/test/GOPR0384_11_00/blur/000001.png": b"",
    "GOPRO_Large/README.txt": "café ✓\n".encode(),
}
TAR_MODES = ["w", "w:gz", "w:bz2", "w:xz"]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


@pytest.fixture
def group_umask() -> Iterator[None]:
    """umask 002, as on a project shared by a group: different from the usual 022, so it shows in the modes."""
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


def make_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("GOPRO_Large/empty_dir/", b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so the mode in external_attr counts
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data


def make_tar(path: Path, entries: list[tuple], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def tree_entries() -> list[tuple]:
    return [tar_entry("GOPRO_Large/empty_dir", tarfile.DIRTYPE)] + [tar_entry(n, data=d) for n, d in TREE.items()]


def assert_refused(archive: Path, dest: Path, *fragments: str, **limits: int) -> str:
    """Extraction fails with a message naming the archive and `fragments`, and writes nothing anywhere."""
    outside_before = sorted(p.name for p in archive.parent.parent.iterdir())
    with pytest.raises(ImrestoreError) as caught:
        extract_archive(archive, dest, progress=False, **limits)
    message = str(caught.value)
    assert str(archive) in message
    for fragment in fragments:
        assert fragment in message
    assert list(dest.iterdir()) == []
    assert sorted(p.name for p in archive.parent.iterdir()) == sorted([archive.name, dest.name])
    assert sorted(p.name for p in archive.parent.parent.iterdir()) == outside_before
    return message


def assert_tree(dest: Path, files: dict[str, bytes]) -> None:
    written = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert written == files
    umask = current_umask()
    for path in dest.rglob("*"):
        if not path.is_symlink():  # the umask decides, and data files are never executable
            expected = (0o777 if path.is_dir() else 0o666) & ~umask
            assert stat.S_IMODE(path.lstat().st_mode) == expected, path


# --- good archives --------------------------------------------------------------------------------------


def test_zip_round_trip_is_byte_exact(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "GoPro_Large.zip", TREE)
    assert extract_archive(archive, dest, progress=False) == len(TREE)
    assert_tree(dest, TREE)
    assert (dest / "GOPRO_Large/empty_dir").is_dir()


@pytest.mark.parametrize("mode", TAR_MODES)
def test_tar_round_trip_is_byte_exact(tmp_path: Path, dest: Path, mode: str) -> None:
    archive = make_tar(tmp_path / "data.tar.gz", tree_entries(), mode)
    assert extract_archive(archive, dest, progress=False) == len(TREE)
    assert_tree(dest, TREE)
    assert (dest / "GOPRO_Large/empty_dir").is_dir()


def test_windows_zip_with_backslash_names_and_directory_entries(tmp_path: Path, dest: Path) -> None:
    """As .NET's ZipFile.CreateFromDirectory writes them: '\\' separators, and folders stored as entries of
    their own that end with '\\' and carry the MS-DOS directory attribute (one here carries only the
    attribute)."""
    folders = sorted({parent.as_posix() for name in TREE for parent in PurePosixPath(name).parents} - {"."})
    archive = tmp_path / "GoPro_Large.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in [f"{folder}/" for folder in folders] + ["GOPRO_Large/empty_dir/", "GOPRO_Large/attr_only_dir"]:
            info = zipfile.ZipInfo(name.replace("/", "\\"))
            info.create_system, info.external_attr = 0, 0x10  # MS-DOS, FILE_ATTRIBUTE_DIRECTORY
            zf.writestr(info, b"")
        for name, data in TREE.items():
            info = zipfile.ZipInfo(name.replace("/", "\\"))
            info.create_system, info.external_attr = 0, 0x20  # MS-DOS, FILE_ATTRIBUTE_ARCHIVE
            zf.writestr(info, data)
    assert extract_archive(archive, dest, progress=False) == len(TREE)
    assert_tree(dest, TREE)
    assert (dest / "GOPRO_Large/empty_dir").is_dir()
    assert (dest / "GOPRO_Large/attr_only_dir").is_dir()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_extracted_files_and_folders_follow_the_umask(
    tmp_path: Path, dest: Path, group_umask: None, kind: str
) -> None:
    if kind == "zip":
        archive = make_zip(tmp_path / "data.zip", TREE)
    else:
        archive = make_tar(tmp_path / "data.tar", tree_entries(), "w")
    extract_archive(archive, dest, progress=False)
    assert_tree(dest, TREE)
    assert stat.S_IMODE((dest / "GOPRO_Large/empty_dir").stat().st_mode) == 0o775
    assert stat.S_IMODE((dest / "GOPRO_Large/README.txt").stat().st_mode) == 0o664


def test_an_empty_plain_tar_extracts_nothing(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "empty.tar", [], "w")  # only the end-of-archive marker and padding
    assert extract_archive(archive, dest, progress=False) == 0
    assert list(dest.iterdir()) == []


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs a tar command")
def test_a_plain_tar_written_by_the_tar_command_extracts(tmp_path: Path, dest: Path) -> None:
    source = tmp_path / "source"
    for name, data in TREE.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    archive = tmp_path / "data.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(source), "GOPRO_Large"], check=True)
    shutil.rmtree(source)
    assert extract_archive(archive, dest, progress=False) == len(TREE)
    assert_tree(dest, TREE)


def test_format_comes_from_content_not_extension(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "misnamed.tar.gz", TREE)
    assert extract_archive(archive, dest, progress=False) == len(TREE)
    assert_tree(dest, TREE)


def test_progress_bar_does_not_disturb_extraction(
    tmp_path: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = make_tar(tmp_path / "data.tgz", tree_entries())
    assert extract_archive(archive, dest, progress=True) == len(TREE)
    assert_tree(dest, TREE)
    assert capsys.readouterr().out == ""  # the bar goes to stderr


def test_links_that_stay_inside_dest_are_created(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(
        tmp_path / "links.tar",
        [
            tar_entry("data/a.png", data=b"pixels"),
            tar_entry("data/sub/latest.png", tarfile.SYMTYPE, linkname="../a.png"),
            tar_entry("data/copy.png", tarfile.LNKTYPE, linkname="data/a.png"),
            tar_entry("alias", tarfile.SYMTYPE, linkname="data"),
        ],
        "w",
    )
    assert extract_archive(archive, dest, progress=False) == 2  # the file and its hardlink
    assert os.readlink(dest / "data/sub/latest.png") == "../a.png"
    assert (dest / "data/sub/latest.png").read_bytes() == b"pixels"
    assert (dest / "data/copy.png").read_bytes() == b"pixels"
    assert (dest / "alias/a.png").read_bytes() == b"pixels"


def test_zip_symlink_inside_dest_is_created(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/a.png", b"pixels")
        zip_symlink(zf, "data/b.png", "a.png")
    assert extract_archive(archive, dest, progress=False) == 1
    assert os.readlink(dest / "data/b.png") == "a.png"
    assert (dest / "data/b.png").read_bytes() == b"pixels"


# --- hostile paths and links ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil.txt", "data/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt", "\\evil.txt", "..\\evil.txt"]
)
def test_zip_paths_outside_dest_are_refused(tmp_path: Path, dest: Path, name: str) -> None:
    archive = make_zip(tmp_path / "evil.zip", {"ok.txt": b"fine", name: b"pwned"})
    assert_refused(archive, dest, repr(name))


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt"])
def test_tar_paths_outside_dest_are_refused(tmp_path: Path, dest: Path, name: str) -> None:
    archive = make_tar(tmp_path / "evil.tar.gz", [tar_entry("ok.txt", data=b"fine"), tar_entry(name, data=b"pwned")])
    assert_refused(archive, dest, repr(name))


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside"])
def test_tar_symlinks_leaving_dest_are_refused(tmp_path: Path, dest: Path, target: str) -> None:
    archive = make_tar(tmp_path / "evil.tar", [tar_entry("data/link", tarfile.SYMTYPE, linkname=target)], "w")
    assert_refused(archive, dest, "'data/link'", target)
    assert not (tmp_path.parent / "outside").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside"])
def test_zip_symlinks_leaving_dest_are_refused(tmp_path: Path, dest: Path, target: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zip_symlink(zf, "data/link", target)
    assert_refused(archive, dest, "'data/link'", target)


@pytest.mark.parametrize("target", ["../outside", "/etc/passwd"])
def test_tar_hardlinks_leaving_dest_are_refused(tmp_path: Path, dest: Path, target: str) -> None:
    archive = make_tar(tmp_path / "evil.tar", [tar_entry("data/hard", tarfile.LNKTYPE, linkname=target)], "w")
    assert_refused(archive, dest, "'data/hard'", "hardlink", target)


def test_symlink_chain_leaving_dest_is_refused(tmp_path: Path, dest: Path) -> None:
    # Each link looks harmless on its own; together `b` is dest's parent.
    archive = make_tar(
        tmp_path / "chain.tar",
        [tar_entry("a", tarfile.SYMTYPE, linkname="."), tar_entry("b", tarfile.SYMTYPE, linkname="a/..")],
        "w",
    )
    assert_refused(archive, dest, "'b'", "outside")


def test_writing_through_a_planted_symlink_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(
        tmp_path / "plant.tar",
        [
            tar_entry("sub", tarfile.DIRTYPE),
            tar_entry("d", tarfile.SYMTYPE, linkname="sub"),
            tar_entry("d/x", data=b"x"),
        ],
        "w",
    )
    assert_refused(archive, dest, "'d/x'", "beneath symlink 'd'")


@pytest.mark.parametrize(
    ("kind", "word"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_tar_special_files_are_refused(tmp_path: Path, dest: Path, kind: bytes, word: str) -> None:
    archive = make_tar(tmp_path / "dev.tar.gz", [tar_entry("ok.txt", data=b"fine"), tar_entry("data/node", kind)])
    assert_refused(archive, dest, "'data/node'", word)


def test_zip_special_files_are_refused(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "dev.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/pipe")
        info.create_system, info.external_attr = 3, (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, b"")
    assert_refused(archive, dest, "'data/pipe'", "FIFO")


# --- bombs ----------------------------------------------------------------------------------------------


def zeros_zip(path: Path, name: str = "zeros.bin", mib: int = 64) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(name, "w") as member:
            for _ in range(mib):
                member.write(bytes(1024 * 1024))
    assert path.stat().st_size < 1024 * 1024
    return path


def test_zip_bomb_is_refused_before_extracting(tmp_path: Path, dest: Path) -> None:
    archive = zeros_zip(tmp_path / "bomb.zip")
    limit = "1.0 MiB (1,048,576 bytes)"
    assert_refused(archive, dest, "'zeros.bin'", limit, "max_total_bytes", max_total_bytes=1 << 20, max_ratio=1e9)


def test_a_zip_member_that_expands_too_much_is_refused_by_its_ratio(tmp_path: Path, dest: Path) -> None:
    """Within the size cap, 64 MiB of zeros is still refused: no image dataset deflates 200-fold."""
    archive = zeros_zip(tmp_path / "bomb.zip", "GOPRO_Large/train/zeros.bin")
    message = assert_refused(archive, dest, "member 'GOPRO_Large/train/zeros.bin' expands to 64.0 MiB", "max_ratio")
    assert re.search(r"from \d+\.\d KiB \([\d,]+ bytes\) stored, a ratio of [\d,]+:1, above the limit of 100:1", message)


def test_a_tar_bomb_is_refused_by_the_whole_archive_ratio(tmp_path: Path, dest: Path) -> None:
    """tar records no compressed sizes, so the declared total is judged against the archive's own size."""
    archive = make_tar(tmp_path / "bomb.tar.gz", [tar_entry("zeros.bin", data=bytes(16 * 1024 * 1024))])
    assert archive.stat().st_size < 100 * 1024
    assert_refused(archive, dest, "its members expand to 16.0 MiB", "the whole archive's", "max_ratio")


def test_incompressible_data_and_small_compressible_files_pass_the_ratio_checks(tmp_path: Path, dest: Path) -> None:
    files = {"data/noise.bin": os.urandom(2 * 1024 * 1024), "data/index.txt": b"0001 scene\n" * 50_000}
    archive = make_zip(tmp_path / "fine.zip", files)  # index.txt: 550 KB that deflates about 200-fold
    assert extract_archive(archive, dest, progress=False) == 2
    assert (dest / "data" / "index.txt").read_bytes() == files["data/index.txt"]


def test_a_layout_check_refuses_by_member_names_before_anything_is_written(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"GOPRO_Large/train/notes.txt": b"x", "README": b"y"})
    seen: list[list[str]] = []

    def refuse(names):
        seen.append(sorted(names))
        raise ImrestoreError("not the layout")

    with pytest.raises(ImrestoreError, match="not the layout"):
        extract_archive(archive, dest, check_names=refuse, progress=False)
    # make_zip always adds the empty folder GOPRO_Large/empty_dir/: folders reach the check with a slash.
    assert seen == [["GOPRO_Large/empty_dir/", "GOPRO_Large/train/notes.txt", "README"]]
    assert list(dest.iterdir()) == []


def test_too_many_members_are_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "many.tar.gz", [tar_entry(f"f{i:03d}.txt", data=b"x") for i in range(50)])
    assert_refused(archive, dest, "'f010.txt'", "10 members", "max_members", max_members=10)


def test_bytes_written_are_bounded_even_if_headers_lie(tmp_path: Path) -> None:
    # stdlib readers stop at the declared size, so no real archive can reach this check; it is the last line.
    limits = _Limits(max_total_bytes=10, max_members=10, max_ratio=100.0, archive_bytes=1, check_names=None,
                     limit_name="max_total_bytes")
    budget = _ByteBudget(tmp_path / "liar.zip", limits)
    budget.spend(_Member("a.bin", ("a.bin",), "regular file", size=10), 0, 10)
    with pytest.raises(ImrestoreError, match=r"'b\.bin' produced more than the limit of 10 bytes \(max_total_bytes"):
        budget.spend(_Member("b.bin", ("b.bin",), "regular file", size=10), 0, 1)
    with pytest.raises(ImrestoreError, match=r"'c\.bin' produced more than its declared size of 4 bytes"):
        _ByteBudget(tmp_path / "liar.zip", limits).spend(_Member("c.bin", ("c.bin",), "regular file", size=4), 3, 2)


# --- broken archives ------------------------------------------------------------------------------------


def truncate_to_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_zip_says_download_again(tmp_path: Path, dest: Path) -> None:
    archive = truncate_to_half(make_zip(tmp_path / "GoPro_Large.zip", TREE))
    with pytest.raises(ImrestoreError, match="truncated or corrupt.*download again") as caught:
        extract_archive(archive, dest, progress=False)
    assert str(archive) in str(caught.value)


@pytest.mark.parametrize("mode", TAR_MODES)
def test_truncated_tar_says_download_again(tmp_path: Path, dest: Path, mode: str) -> None:
    archive = truncate_to_half(make_tar(tmp_path / "data.tar.gz", tree_entries(), mode))
    with pytest.raises(ImrestoreError, match="truncated or corrupt.*download again") as caught:
        extract_archive(archive, dest, progress=False)
    assert str(archive) in str(caught.value)


@pytest.mark.parametrize("last", [1, len(TREE)])  # the index of the last member left whole
@pytest.mark.parametrize("header_bytes", [0, 100])
def test_plain_tar_cut_between_members_says_download_again(
    tmp_path: Path, dest: Path, last: int, header_bytes: int
) -> None:
    """Cut right after a member (and, with header_bytes, partway into the next header): tarfile alone would
    stop there quietly and extract the members before the cut as if nothing were missing."""
    archive = make_tar(tmp_path / "data.tar", tree_entries(), "w")
    with tarfile.open(archive) as tar:
        infos = tar.getmembers()
        end = infos[last + 1].offset if last + 1 < len(infos) else tar.offset
    archive.write_bytes(archive.read_bytes()[: end + header_bytes])
    assert_refused(
        archive,
        dest,
        "truncated",
        f"expected an end-of-archive marker after member {infos[last].name!r} at byte {end:,}",
        f"found the end of the file at byte {end + header_bytes:,}",
        "download again",
    )


def test_plain_tar_with_a_damaged_header_says_download_again(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "data.tar", tree_entries(), "w")
    with tarfile.open(archive) as tar:
        infos = tar.getmembers()
    data = bytearray(archive.read_bytes())
    data[infos[2].offset] ^= 0x01  # a changed name no longer matches the header's checksum
    archive.write_bytes(bytes(data))
    assert_refused(
        archive,
        dest,
        f"expected an end-of-archive marker after member {infos[1].name!r} at byte {infos[2].offset:,}",
        "found a header that tarfile cannot read",
        "download again",
    )


def test_crc_mismatch_names_the_member(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "flipped.zip", {"a.bin": b"A" * 1000}, zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    data[data.index(b"A" * 1000) + 500] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ImrestoreError, match=r"truncated or corrupt.*'a\.bin'.*download again"):
        extract_archive(archive, dest, progress=False)


def test_unknown_format_names_file_and_supported_formats(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "GoPro_Large.zip"
    archive.write_bytes(b"<!DOCTYPE html><html>quota exceeded</html>")
    message = assert_refused(archive, dest, "not in a supported format", "zip", "tar.gz")
    assert "<!DOCTYPE" in message


def test_dest_must_be_an_empty_directory(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", TREE)
    (dest / "stale.png").write_bytes(b"old")
    with pytest.raises(ImrestoreError, match="expected an empty directory.*stale.png"):
        extract_archive(archive, dest, progress=False)
