"""Where a dataset comes from, and how it becomes `build/raw/<dataset>/` in the upstream layout.

A source is one of:
- `sample`: synthesized from the photographs in data/sample_photos (the embedded default);
- an `https://` or `http://` URL of the upstream archive (plus optional mirrors), pinned by sha256;
- a `file://` URL or a local path: an archive (e.g. one versioned in data/ with DVC), pinned by sha256,
  or an already-extracted folder in the upstream layout.
Whatever the source, the result is verified against the layout and published atomically: a failure leaves
the previous output (or nothing), never half a dataset.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imrestore import atomic
from imrestore.acquire.archives import extract_archive
from imrestore.acquire.download import UnpinnedDownload, download
from imrestore.acquire.sample import GoproSampleConfig, SiddSampleConfig, make_gopro_sample, make_sidd_sample
from imrestore.atomic import sha256_file
from imrestore.data import layouts
from imrestore.errors import ImrestoreError
from imrestore.params import TEXT, Rule, Section, given, items, number, optional, param, required

SAMPLE = "sample"
SAMPLE_PHOTOS_DIR = Path("data/sample_photos")
# Verified archives are kept here (outside DVC's outputs) so an interrupted download resumes and a
# re-run of the stage does not fetch gigabytes again. Safe to delete.
DOWNLOAD_CACHE = Path(os.environ.get("IMRESTORE_DOWNLOAD_CACHE", "downloads"))
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SAMPLE_CONFIGS = {"gopro": GoproSampleConfig, "sidd": SiddSampleConfig}
# The most an archive may unpack to, in GiB, unless `download.<dataset>.max_unpacked_gib` says otherwise:
# about twice the published archives (GOPRO_Large.zip about 9 GB, SIDD_Small_sRGB_Only.zip about 6 GB; their
# PNGs do not compress further), so a real dataset fits and a decompression bomb stops well short of a disk.
DEFAULT_MAX_UNPACKED_GIB = {"gopro": 20.0, "sidd": 16.0}


SHA256 = Rule("null or a quoted string of 64 hex digits (YAML reads an unquoted hash of digits as a number, "
              "so quote it)", lambda v: v is None or (isinstance(v, str) and bool(_SHA256.match(v))),
              lambda v: v.lower() if v else None)


@dataclass(frozen=True)
class SourceConfig(Section):
    """The `download.<dataset>` section of params.yaml."""

    SECTION = "download"

    dataset: str = given()
    source: str = required(Rule("'sample', a URL or a path", lambda v: isinstance(v, str) and bool(v.strip()),
                                str.strip))
    sha256: str | None = param(None, SHA256)
    mirrors: tuple[str, ...] = param((), items(TEXT, "URLs"))
    sample: dict[str, Any] = param({}, optional(Rule("a mapping", lambda v: isinstance(v, dict))))
    max_unpacked_gib: float | None = param(None, optional(number(above=0)))  # None: DEFAULT_MAX_UNPACKED_GIB

    @classmethod
    def for_dataset(cls, dataset: str, section: Any) -> SourceConfig:
        if dataset not in layouts.DATASETS:
            raise ImrestoreError(f"unknown dataset {dataset!r}: expected one of {', '.join(layouts.DATASETS)}")
        return cls.from_params(section, f"download.{dataset}", dataset=dataset)

    @classmethod
    def check_consistency(cls, values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
        cls.sample_config_of(values["dataset"], values["sample"])  # a bad sample config is named now, not later

    @staticmethod
    def sample_config_of(dataset: str, sample: dict[str, Any] | None) -> GoproSampleConfig | SiddSampleConfig:
        return _SAMPLE_CONFIGS[dataset].from_params(sample, f"download.{dataset}.sample")

    @property
    def unpacked_limit_gib(self) -> float:
        return DEFAULT_MAX_UNPACKED_GIB[self.dataset] if self.max_unpacked_gib is None else self.max_unpacked_gib

    def sample_config(self) -> GoproSampleConfig | SiddSampleConfig:
        return self.sample_config_of(self.dataset, self.sample)

    @property
    def kind(self) -> str:
        if self.source == SAMPLE:
            return "sample"
        try:
            scheme = urllib.parse.urlparse(self.source).scheme
        except ValueError as err:  # e.g. an unclosed IPv6 bracket
            raise ImrestoreError(f"params.yaml: download.{self.dataset}.source must be 'sample', a URL or a path, "
                                 f"found {self.source!r}, which is no valid URL: {err}") from None
        if scheme in ("http", "https"):
            return "url"
        if scheme in ("", "file"):
            return "path"
        raise ImrestoreError(
            f"params.yaml: download.{self.dataset}.source {self.source!r} has unsupported scheme {scheme!r}; "
            "expected 'sample', http(s)://, file:// or a local path"
        )

    def local_path(self) -> Path:
        parsed = urllib.parse.urlparse(self.source)
        return Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else Path(self.source)


def _check_member_layout(archive: Path, names: list[str], config: SourceConfig) -> None:
    try:
        layouts.check_member_layout(names, config.dataset)
    except ImrestoreError as error:
        raise ImrestoreError(f"refusing to extract {archive}: {error}. Nothing was extracted.") from error


def expected_pairs(config: SourceConfig) -> dict[str, int]:
    """How many pairs per split the source must yield: the sample knows; real data has published counts."""
    if config.kind == "sample":
        return config.sample_config().expected_pairs()
    return dict(OFFICIAL_PAIRS[config.dataset])


# Published sizes: GoPro 2103 train / 1111 test (Nah et al. 2017); SIDD-Small 160 scene instances.
OFFICIAL_PAIRS = {"gopro": {"train": 2103, "test": 1111}, "sidd": {"all": 160}}


def acquire(config: SourceConfig, out_dir: Path, progress: bool = True) -> Path:
    """Materialise the dataset at `out_dir/<upstream root>` atomically; return that root."""
    with atomic.atomic_dir(out_dir) as staging:
        if config.kind == "sample":
            _synthesize(config, staging)
        elif config.kind == "url":
            archive = _fetch(config, progress)
            _unpack(archive, staging, config, progress)
        else:
            _from_local(config, staging, progress)
        root = layouts.layout_root(staging, config.dataset)
        layouts.check_layout(root, config.dataset)
        root_name = root.name
    return out_dir / root_name


def _synthesize(config: SourceConfig, staging: Path) -> None:
    cfg = config.sample_config()
    if config.dataset == "gopro":
        make_gopro_sample(SAMPLE_PHOTOS_DIR, staging, cfg)
    else:
        make_sidd_sample(SAMPLE_PHOTOS_DIR, staging, cfg)


def _fetch(config: SourceConfig, progress: bool) -> Path:
    """Download from the source URL, then each mirror in turn; every copy is checked against the pin."""
    urls = [config.source, *config.mirrors]
    name = Path(urllib.parse.urlparse(config.source).path).name or f"{config.dataset}.archive"
    # A folder per dataset: URLs of both can end alike (Google Drive's `uc?id=…`, `download.php?file=…`).
    dest = DOWNLOAD_CACHE / config.dataset / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    _adopt_shared_folder_download(DOWNLOAD_CACHE / name, dest, config.sha256)
    failures = []
    for url in urls:
        try:
            return download(url, dest, sha256=config.sha256, progress=progress)
        except UnpinnedDownload:
            raise  # it arrived: the message gives the hash to pin
        except ImrestoreError as exc:
            if config.sha256 is None:  # nothing to verify a mirror's copy against: the user must pin a hash first
                if not config.mirrors:
                    raise
                raise ImrestoreError(
                    f"{exc}\nThe {len(config.mirrors)} mirror(s) in download.{config.dataset}.mirrors were not tried: "
                    "with no sha256 pinned, nothing could check that a mirror serves the same archive. Pin "
                    f"download.{config.dataset}.sha256, or set download.{config.dataset}.source to a mirror to "
                    "get the hash of its copy") from None
            failures.append(f"  {exc}" if url in str(exc) else f"  {url}: {exc}")
    raise ImrestoreError(f"could not download {config.dataset} from any source:\n" + "\n".join(failures))


def _adopt_shared_folder_download(old: Path, dest: Path, sha256: str | None) -> None:
    """Downloads used to be kept in one folder for both datasets, as `downloads/<name>`. A verified archive left
    there that has this dataset's pin moves to the dataset's folder, rather than being downloaded again (9 GB for
    GoPro); anything else there is left alone, as it may be the other dataset's."""
    if sha256 is not None and not dest.exists() and old.is_file() and sha256_file(old) == sha256:
        old.replace(dest)
        print(f"note: moved {old} to {dest}: each dataset keeps its downloads in a folder of its own",
              file=sys.stderr)


def _from_local(config: SourceConfig, staging: Path, progress: bool) -> None:
    path = config.local_path()
    where = f"download.{config.dataset}.source"
    if path.is_dir():
        root = layouts.find_layout_root(path, config.dataset)
        shutil.copytree(root, staging / root.name, symlinks=False)
        return
    if not path.is_file():
        raise ImrestoreError(f"params.yaml: {where} is {config.source!r}, but {path} does not exist")
    actual = sha256_file(path)
    if config.sha256 is None:
        raise ImrestoreError(
            f"no sha256 pinned for {path}; it has sha256 {actual}. Pin it as download.{config.dataset}.sha256 "
            "in params.yaml so a changed archive can never pass unnoticed"
        )
    if actual != config.sha256:
        raise ImrestoreError(f"checksum mismatch for {path}: expected sha256 {config.sha256}, got {actual}")
    _unpack(path, staging, config, progress)


def _unpack(archive: Path, staging: Path, config: SourceConfig, progress: bool) -> None:
    """Extract next to the output, then move the upstream root to the top of `staging`.

    The layout is judged from the member names, and the size from the headers, before a byte is written."""
    extracted = staging / ".extracted"
    extracted.mkdir()
    extract_archive(archive, extracted, max_total_bytes=int(config.unpacked_limit_gib * 1024**3),
                    limit_name=f"download.{config.dataset}.max_unpacked_gib in params.yaml",
                    check_names=lambda names: _check_member_layout(archive, names, config), progress=progress)
    root = layouts.find_layout_root(extracted, config.dataset)
    os.replace(root, staging / root.name)
    shutil.rmtree(extracted)
