"""Unpack downloaded dataset archives without trusting them.

Threat model. The archives we unpack (GoPro_Large.zip, ~9 GB; SIDD_Small_sRGB_Only.zip, ~6 GB; any archive a
user points the pipeline at) come from the internet. Their sha256 is pinned, so a tampered file is normally
caught before it gets here. But a pin can be bumped carelessly, a mirror can serve something else, and users
bring their own archives, so extraction is the second line of defence and treats every archive as possibly
hostile or broken:

* Path tricks: members named `../x`, `/etc/x` or `C:\\x`, or reached through a symlink or hardlink that the
  archive itself plants (`link -> /`, then `link/etc/x`). `zipfile.extractall` silently rewrites such names
  and `tarfile` without a filter writes them verbatim; neither tells the user anything. We refuse instead of
  rewriting: a dataset archive that needs these tricks is not one to guess about.
* Special files: device nodes and FIFOs have no place in a dataset, and a reader that opens one can hang.
* Decompression bombs: a few kilobytes that expand until `build/` fills the disk. Before anything is
  written, the member count, the declared total and the expansion ratios (each zip member's, and the whole
  archive's against its size on disk) are checked, and so is the layout the member names promise; while
  writing, the bytes actually produced are counted against the same limits, because a declared size is only
  a number in a header. Datasets of images barely compress (PNG is already deflated), so a ratio far above
  1 is a bomb, not a dataset.
* Truncation and corruption: an interrupted download is by far the most common failure. It must read as
  "download it again", not as a `zlib.error` traceback.

Every member is vetted before the first byte is written, so a hostile archive writes nothing. A member can
never be written through a link (nothing may be stored beneath a link), and files are opened with O_EXCL, so
every write lands inside `dest`. The caller wraps `dest` in `atomic.atomic_dir`, so an archive that turns out
corrupt halfway through leaves nothing behind that DVC could cache as a result.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.progress import SpinnerColumn, TextColumn

from imrestore.errors import ImrestoreError
from imrestore.progress import byte_columns, new_progress

# Both datasets are far below these (GoPro: ~9 GB in ~10,000 files), yet they still stop a bomb before it
# fills a disk. Callers pass tighter limits when they know the archive.
DEFAULT_MAX_TOTAL_BYTES = 256 * 1024**3
DEFAULT_MAX_MEMBERS = 2_000_000
# Uncompressed : compressed. PNG datasets sit near 1:1 and text files rarely pass 20:1; zeros deflate at
# about 1000:1. Members under MIN_RATIO_CHECK_BYTES are exempt: a small index file may compress very well.
DEFAULT_MAX_RATIO = 100.0
MIN_RATIO_CHECK_BYTES = 1024**2

SUPPORTED_FORMATS = "zip, tar, tar.gz/tgz, tar.bz2, tar.xz"

_CHUNK_BYTES = 1024 * 1024
_MAX_LINK_HOPS = 40  # the kernel's own limit on symlinks followed in one lookup (ELOOP)
_MAX_SYMLINK_TARGET_BYTES = 4096  # PATH_MAX: anything longer cannot be a usable link target

_FILE, _DIR, _SYMLINK, _HARDLINK = "regular file", "directory", "symlink", "hardlink"

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_MSDOS = 0  # ZipInfo.create_system of entries written on MS-DOS / Windows
_DOS_DIRECTORY = 0x10  # FILE_ATTRIBUTE_DIRECTORY, in the low byte of external_attr
_TAR_MODES_BY_MAGIC = ((b"\x1f\x8b", "r:gz"), (b"BZh", "r:bz2"), (b"\xfd7zXZ\x00", "r:xz"))

_SPECIAL_ZIP_TYPES = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO (named pipe)",
    stat.S_IFSOCK: "socket",
}
_SPECIAL_TAR_TYPES = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO (named pipe)",
}

# What the decompressors raise on damaged input. OSError is here because gzip and bz2 report bad data as
# OSError; write errors are reported separately (see `_writing`) and never pass through this list.
_CORRUPTION = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


@dataclass
class _Member:
    """One archive entry, reduced to what extraction needs and independent of zip or tar."""

    name: str  # as stored in the archive, for messages
    parts: tuple[str, ...]  # the vetted path below dest
    kind: str
    size: int = 0  # declared uncompressed size of a regular file
    target: str = ""  # link target as stored
    source: object = None  # the ZipInfo / TarInfo to read the data from
    link_to: tuple[str, ...] = ()  # hardlinks: the already written file they resolve to (set by `_vet`)


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
    check_names: Callable[[Sequence[str]], None] | None = None,
    limit_name: str = "max_total_bytes",
    progress: bool = True,
) -> int:
    """Extract zip / tar / tar.gz / tgz / tar.bz2 / tar.xz `archive` into the existing empty directory `dest`.

    `limit_name` is what messages call `max_total_bytes`: the setting a user would raise.
    `check_names` sees every member's vetted path ('a/b/c', directories as 'a/b/') before anything is
    written, and raises to refuse the archive: this is where a caller checks the layout it expects.
    Returns the number of regular files written (hardlinks count, symlinks and directories do not). Raises
    ImrestoreError on anything unsafe or broken; see the module docstring for what that covers.
    """
    archive, dest = Path(archive), Path(dest)
    _check_empty_dir(dest)
    mode = _detect_format(archive)
    limits = _Limits(max_total_bytes, max_members, max_ratio, archive.stat().st_size, check_names, limit_name)
    if mode == "zip":
        return _extract_zip(archive, dest, limits, progress)
    return _extract_tar(archive, mode, dest, limits, progress)


@dataclass(frozen=True)
class _Limits:
    max_total_bytes: int
    max_members: int
    max_ratio: float
    archive_bytes: int
    check_names: Callable[[Sequence[str]], None] | None
    limit_name: str

    @property
    def output_bytes(self) -> int:
        """The most bytes extraction may write: the absolute cap, or the ratio times the archive's size."""
        return min(self.max_total_bytes, max(int(self.archive_bytes * self.max_ratio), MIN_RATIO_CHECK_BYTES))


# --- formats --------------------------------------------------------------------------------------------


def _detect_format(archive: Path) -> str:
    """'zip', or the tarfile mode that opens `archive`, judged from its bytes.

    The content decides, not the name: downloads get renamed, and an HTML error page saved as `.zip` must be
    reported as what it is. Magic numbers come first so that a truncated archive (whose zip directory or tar
    trailer is missing) is still recognised and reported as truncated rather than as "unknown format".
    """
    if not archive.is_file():
        raise ImrestoreError(f"archive {archive} does not exist; expected a {SUPPORTED_FORMATS} file there")
    with archive.open("rb") as stream:
        head = stream.read(512)
    if not head:
        raise ImrestoreError(f"archive {archive} is empty (0 bytes); delete it and download again")
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    for magic, mode in _TAR_MODES_BY_MAGIC:
        if head.startswith(magic):
            return mode
    if head[257:262] == b"ustar":
        return "r:"
    # Rarer layouts without a leading magic: self-extracting zips, pre-POSIX tars.
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "r:"
    raise ImrestoreError(
        f"archive {archive} is not in a supported format: expected {SUPPORTED_FORMATS} (judged from the "
        f"content, not the file name), found a file starting with {head[:16]!r}"
    )


def _extract_zip(archive: Path, dest: Path, limits: _Limits, progress: bool) -> int:
    with _reading(archive):
        zf = zipfile.ZipFile(archive)
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise _too_many_members(archive, infos[limits.max_members].filename, limits.max_members)
        members = [_zip_member(archive, zf, info) for info in infos]
        for info in infos:  # zip, unlike tar, records each member's compressed size
            _check_ratio(archive, info.filename, info.file_size, info.compress_size, limits.max_ratio)
        total = _vet(archive, members, limits)
        return _write_all(archive, dest, members, lambda m: zf.open(m.source), total, limits, progress)


def _zip_member(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    name = info.filename
    parts = _member_parts(archive, name)
    if info.flag_bits & 0x1:
        raise ImrestoreError(
            f"cannot extract {archive}: member {name!r} is encrypted; expected an archive without a password"
        )
    # Zip has no link or device entries of its own; Unix tools store the st_mode in the top 16 bits.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return _Member(name, parts, _SYMLINK, target=_read_zip_symlink(archive, zf, info))
    if _is_zip_dir(info, file_type):
        return _Member(name, parts, _DIR)
    if file_type in (0, stat.S_IFREG):
        return _Member(name, parts, _FILE, size=info.file_size, source=info)
    kind = _SPECIAL_ZIP_TYPES.get(file_type, f"special file (mode {oct(file_type)})")
    raise _unsafe(archive, name, f"is a {kind}; expected only regular files, directories and links")


def _is_zip_dir(info: zipfile.ZipInfo, file_type: int) -> bool:
    # `ZipInfo.is_dir()` only knows a trailing '/'. Windows tools end folder names with '\\' and mark them with
    # the MS-DOS directory attribute instead; read as files, they would become 0-byte files with members
    # "beneath" them.
    dos_dir = info.create_system == _ZIP_MSDOS and info.external_attr & _DOS_DIRECTORY
    return info.filename.endswith(("/", "\\")) or file_type == stat.S_IFDIR or bool(dos_dir)


def _read_zip_symlink(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """A zip symlink stores its target as the member's data."""
    if info.file_size > _MAX_SYMLINK_TARGET_BYTES:
        raise _unsafe(archive, info.filename, f"is a symlink with a {info.file_size}-byte target; expected a path")
    with _reading(archive, info.filename), zf.open(info) as stream:
        return os.fsdecode(stream.read(_MAX_SYMLINK_TARGET_BYTES + 1))


def _extract_tar(archive: Path, mode: str, dest: Path, limits: _Limits, progress: bool) -> int:
    with _reading(archive):
        tar = tarfile.open(archive, mode)
    with tar:
        members = _read_tar_headers(archive, tar, limits.max_members, progress)
        if mode == "r:":
            _check_tar_end(archive, tar, members)
        total = _vet(archive, members, limits)
        for member in members:
            _check_with_tarfile_filter(archive, member.source, dest)
        return _write_all(archive, dest, members, lambda m: tar.extractfile(m.source), total, limits, progress)


def _read_tar_headers(archive: Path, tar: tarfile.TarFile, max_members: int, progress: bool) -> list[_Member]:
    """Vet every header before extracting. A compressed tar has no index, so this pass decompresses the
    whole archive once; iterating (rather than `getmembers()`) stops a header bomb at max_members."""
    members: list[_Member] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} members"))
    with new_progress(*columns, enabled=progress) as bar, _reading(archive):
        task = bar.add_task(f"Checking {archive.name}", total=None)
        for info in tar:
            if len(members) == max_members:
                raise _too_many_members(archive, info.name, max_members)
            members.append(_tar_member(archive, info))
            bar.advance(task)
    return members


def _check_tar_end(archive: Path, tar: tarfile.TarFile, members: Sequence[_Member]) -> None:
    """Refuse a plain tar that stops before its end-of-archive marker.

    tarfile ends its member list quietly at end of file, at a partial header and at an unreadable one alike,
    so a download cut exactly between two members would otherwise extract "successfully", members missing.
    Only a block of zeros where the next header would be (tarfile's own end test) is a real end. Compressed
    tars need no such check: their decompressors verify the stream's own end marker and checksum.
    """
    with _reading(archive):
        tar.fileobj.seek(tar.offset)
        block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if block == tarfile.NUL * tarfile.BLOCKSIZE:
        return
    where = f"after member {members[-1].name!r}" if members else "at the start"
    if len(block) < tarfile.BLOCKSIZE:
        found = f"the end of the file at byte {tar.offset + len(block):,}: the download is incomplete"
    else:
        found = "a header that tarfile cannot read"
    raise _corrupt(archive, f"expected an end-of-archive marker {where} at byte {tar.offset:,}; found {found}")


def _tar_member(archive: Path, info: tarfile.TarInfo) -> _Member:
    parts = _member_parts(archive, info.name)
    if info.isreg():
        return _Member(info.name, parts, _FILE, size=info.size, source=info)
    if info.isdir():
        return _Member(info.name, parts, _DIR, source=info)
    if info.issym():
        return _Member(info.name, parts, _SYMLINK, target=info.linkname, source=info)
    if info.islnk():
        return _Member(info.name, parts, _HARDLINK, target=info.linkname, source=info)
    kind = _SPECIAL_TAR_TYPES.get(info.type, f"special member (tar type {info.type!r})")
    raise _unsafe(archive, info.name, f"is a {kind}; expected only regular files, directories and links")


def _check_with_tarfile_filter(archive: Path, info: tarfile.TarInfo, dest: Path) -> None:
    """A second opinion from `tarfile.data_filter` (PEP 706), in our words. It runs after our own checks,
    which are stricter and explain more; it is here for the case we did not think of."""
    try:
        tarfile.data_filter(info, str(dest))
    except tarfile.FilterError as error:
        raise _unsafe(archive, info.name, f"is refused by Python's tarfile data filter ({error})") from error


# --- vetting --------------------------------------------------------------------------------------------


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    if "\0" in name:
        raise _unsafe(archive, name, "contains a NUL byte")
    if _is_absolute(name):
        raise _unsafe(archive, name, "is an absolute path; expected a path relative to the archive root")
    parts = _split(name)
    if ".." in parts:
        raise _unsafe(archive, name, "has a '..' component; expected a path that stays inside the archive root")
    return tuple(parts)


def _split(path: str) -> list[str]:
    # Backslashes count as separators: Windows tools put them in zip names, and a name like `..\..\x` must not
    # slip past the `..` check only to be split by some later reader.
    return [part for part in re.split(r"[\\/]", path) if part not in ("", ".")]


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path) is not None


def _vet(archive: Path, members: Sequence[_Member], limits: _Limits) -> int:
    """Check the whole archive before anything is written; return the declared number of bytes."""
    total = _check_declared_total(archive, members, limits.max_total_bytes, limits.limit_name)
    _check_ratio(archive, None, total, limits.archive_bytes, limits.max_ratio)
    _check_tree(archive, members)
    if limits.check_names is not None:
        limits.check_names(["/".join(m.parts) + ("/" if m.kind == _DIR else "") for m in members if m.parts])
    symlinks = {m.parts: tuple(_link_target_parts(archive, m)) for m in members if m.kind == _SYMLINK}
    written: set[tuple[str, ...]] = set()
    for member in members:
        if member.kind == _SYMLINK:
            _check_symlink(archive, member, symlinks)
        elif member.kind == _HARDLINK:
            member.link_to = _check_hardlink(archive, member, symlinks, written)
        if member.kind in (_FILE, _HARDLINK):
            written.add(member.parts)
    return total


def _check_declared_total(archive: Path, members: Sequence[_Member], limit: int, limit_name: str) -> int:
    files = [m for m in members if m.kind == _FILE]
    total = sum(m.size for m in files)
    if total > limit:
        largest = max(files, key=lambda m: m.size)
        raise ImrestoreError(
            f"refusing to extract {archive}: its members declare {_describe_bytes(total)} uncompressed "
            f"(largest: member {largest.name!r}, {_describe_bytes(largest.size)}), above the limit of "
            f"{_describe_bytes(limit)} ({limit_name}). This looks like a decompression bomb; raise "
            f"{limit_name} only if the dataset really is that large. Nothing was extracted."
        )
    return total


def _check_ratio(archive: Path, member: str | None, size: int, compressed: int, limit: float) -> None:
    """Refuse a member (or, with member None, the whole archive) that expands more than `limit` times."""
    if size < MIN_RATIO_CHECK_BYTES or size <= limit * max(compressed, 1):
        return
    what = f"member {member!r} expands" if member else "its members expand"
    source = "stored" if member else "the whole archive's"
    raise ImrestoreError(
        f"refusing to extract {archive}: {what} to {_describe_bytes(size)} from {_describe_bytes(compressed)} "
        f"{source}, a ratio of {size / max(compressed, 1):,.0f}:1, above the limit of {limit:,.0f}:1 "
        "(max_ratio). Image datasets barely compress, so this looks like a decompression bomb. "
        "Nothing was extracted."
    )


def _check_tree(archive: Path, members: Sequence[_Member]) -> None:
    """Each path is claimed once, and nothing is stored beneath a file or a link. The second rule is what keeps
    writes inside dest: no member can be written *through* a symlink that the archive planted."""
    claimed: dict[tuple[str, ...], _Member] = {}
    for member in members:
        if not member.parts:
            if member.kind == _DIR:
                continue  # "./" names dest itself, which exists already
            raise _unsafe(archive, member.name, f"is a {member.kind} named like the extraction directory itself")
        earlier = claimed.setdefault(member.parts, member)
        if earlier is not member and not (earlier.kind == member.kind == _DIR):
            first = f"first as {earlier.kind} {earlier.name!r}"
            raise _unsafe(archive, member.name, f"is stored twice ({first}); expected each path once")
    for member in members:
        for depth in range(1, len(member.parts)):
            parent = claimed.get(member.parts[:depth])
            if parent is not None and parent.kind != _DIR:
                problem = f"lies beneath {parent.kind} {parent.name!r}; expected it inside a directory"
                raise _unsafe(archive, member.name, problem)


def _link_target_parts(archive: Path, member: _Member) -> list[str]:
    target = member.target
    if not target or "\0" in target:
        raise _unsafe(archive, member.name, f"is a {member.kind} with an empty or invalid target {target!r}")
    if _is_absolute(target):
        problem = f"is a {member.kind} to the absolute path {target!r}; expected a target inside the archive"
        raise _unsafe(archive, member.name, problem)
    return _split(target)


def _check_symlink(archive: Path, member: _Member, symlinks: Mapping[tuple[str, ...], tuple[str, ...]]) -> None:
    # A symlink's target is relative to the directory that holds it.
    if _resolve_inside(member.parts[:-1] + symlinks[member.parts], symlinks) is None:
        raise _unsafe(
            archive,
            member.name,
            f"is a symlink to {member.target!r}, which resolves outside the extraction directory (or loops)",
        )


def _check_hardlink(
    archive: Path,
    member: _Member,
    symlinks: Mapping[tuple[str, ...], tuple[str, ...]],
    written: set[tuple[str, ...]],
) -> tuple[str, ...]:
    # A tar hardlink's target is relative to the archive root, and it must name data written before it.
    resolved = _resolve_inside(_link_target_parts(archive, member), symlinks)
    if resolved is None:
        raise _unsafe(
            archive,
            member.name,
            f"is a hardlink to {member.target!r}, which resolves outside the extraction directory",
        )
    if resolved not in written:
        raise _unsafe(
            archive,
            member.name,
            f"is a hardlink to {member.target!r}; expected that to be a regular file stored earlier in the archive",
        )
    return resolved


def _resolve_inside(
    path: Sequence[str], symlinks: Mapping[tuple[str, ...], tuple[str, ...]]
) -> tuple[str, ...] | None:
    """Where `path` (relative to dest, '..' allowed) lands once the archive's own symlinks exist on disk.

    This is `os.path.realpath` played out on the archive instead of the disk, so that links can be judged
    before any of them is created; judging each link on its own would miss chains such as `a -> .` plus
    `b -> a/..`. Returns None if the path leaves dest or loops.
    """
    pending = list(reversed(path))
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        target = symlinks.get(tuple(resolved))
        if target is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                return None
            resolved.pop()
            pending.extend(reversed(target))
    return tuple(resolved)


# --- writing --------------------------------------------------------------------------------------------


class _ByteBudget:
    """Counts bytes as they are written. Declared sizes are header fields; this is what actually fills disks."""

    def __init__(self, archive: Path, limits: _Limits) -> None:
        self.archive, self.limits, self.spent = archive, limits, 0

    def spend(self, member: _Member, written: int, n: int) -> None:
        """Count `n` more bytes of `member`, of which `written` were written before."""
        self.spent += n
        if written + n > member.size:
            passed = f"its declared size of {_describe_bytes(member.size)}"
        elif self.spent > self.limits.output_bytes:
            passed = (f"the limit of {_describe_bytes(self.limits.output_bytes)} ({self.limits.limit_name}, or max_ratio "
                      f"{self.limits.max_ratio:,.0f} times the archive's {_describe_bytes(self.limits.archive_bytes)})")
        else:
            return
        raise ImrestoreError(
            f"stopped extracting {self.archive}: member {member.name!r} produced more than {passed}. Its headers "
            "lie about the sizes; treat it as a decompression bomb. Nothing was kept."
        )


def _write_all(
    archive: Path,
    dest: Path,
    members: Sequence[_Member],
    open_data: Callable[[_Member], IO[bytes] | None],
    total: int,
    limits: _Limits,
    progress: bool,
) -> int:
    budget = _ByteBudget(archive, limits)
    files = 0
    with new_progress(*byte_columns(), enabled=progress) as bar:
        task = bar.add_task(f"Extracting {archive.name}", total=total)
        for member in members:
            path = dest.joinpath(*member.parts)
            with _writing(archive, member, path):
                if member.kind == _DIR:
                    # Like any other tool's output, extracted folders and files get the process umask, which
                    # the kernel applies to the mode given here (for files in `_write_file`).
                    path.mkdir(mode=0o777, parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if member.kind == _SYMLINK:
                    # Write the separators the way `_split` read them, so the disk matches what was vetted.
                    os.symlink(member.target.replace("\\", "/"), path)
                    continue
                if member.kind == _HARDLINK:
                    os.link(dest.joinpath(*member.link_to), path, follow_symlinks=False)
                else:
                    _write_file(archive, member, path, open_data, budget, lambda n: bar.advance(task, n))
                files += 1
    return files


def _write_file(
    archive: Path,
    member: _Member,
    path: Path,
    open_data: Callable[[_Member], IO[bytes] | None],
    budget: _ByteBudget,
    advance: Callable[[int], None],
) -> None:
    # O_EXCL | O_NOFOLLOW: never reuse whatever already sits at `path`, least of all write through a symlink.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    with _reading(archive, member.name):
        source = open_data(member)
    assert source is not None, "only regular files are read"
    written = 0
    with source, os.fdopen(os.open(path, flags, 0o666), "wb") as target:  # data files: never executable
        while True:
            with _reading(archive, member.name):
                chunk = source.read(_CHUNK_BYTES)
            if not chunk:
                break
            budget.spend(member, written, len(chunk))
            target.write(chunk)
            written += len(chunk)
            advance(len(chunk))
    if written != member.size:
        raise _corrupt(archive, f"member {member.name!r} holds {written} bytes but its header declares {member.size}")


@contextlib.contextmanager
def _reading(archive: Path, member: str | None = None) -> Iterator[None]:
    """Turn the many ways a damaged archive fails into one message that says what to do."""
    try:
        yield
    except NotImplementedError as error:  # zipfile: a compression method it cannot decode, e.g. Deflate64
        raise ImrestoreError(
            f"cannot extract {archive}: member {member!r} uses a compression method that Python's zipfile cannot "
            f"read ({error}); expected stored, deflate, bzip2 or lzma"
        ) from error
    except _CORRUPTION as error:
        where = f", at member {member!r}" if member else ""
        raise _corrupt(archive, f"{type(error).__name__}: {error}{where}") from error


@contextlib.contextmanager
def _writing(archive: Path, member: _Member, path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise ImrestoreError(
            f"could not write {path} (member {member.name!r} of {archive}): {error.strerror or error}; expected a "
            "writable directory with enough free space"
        ) from error


# --- small helpers --------------------------------------------------------------------------------------


def _check_empty_dir(dest: Path) -> None:
    if not dest.is_dir():
        found = "a file" if dest.exists() else "nothing"
        raise ImrestoreError(f"cannot extract into {dest}: expected an existing empty directory, found {found}")
    first = next(dest.iterdir(), None)
    if first is not None:
        raise ImrestoreError(f"cannot extract into {dest}: expected an empty directory, found {first.name!r} in it")


def _unsafe(archive: Path, member: str, problem: str) -> ImrestoreError:
    return ImrestoreError(f"refusing to extract {archive}: member {member!r} {problem}. Nothing was extracted.")


def _too_many_members(archive: Path, member: str, limit: int) -> ImrestoreError:
    return ImrestoreError(
        f"refusing to extract {archive}: it holds more than the limit of {limit:,} members (max_members); "
        f"the limit was reached at member {member!r}. Raise max_members only if the dataset really is that "
        "large. Nothing was extracted."
    )


def _corrupt(archive: Path, detail: str) -> ImrestoreError:
    return ImrestoreError(f"archive {archive} is truncated or corrupt ({detail}); delete it and download again")


def _describe_bytes(n: int) -> str:
    size, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({n:,} bytes)"
