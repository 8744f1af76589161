"""Find the CIFAR files: a local folder, a local archive, the Keras cache, or a download.

Whatever the source, the result is a folder in the original python layout. Archives are
extracted into a temporary folder with tarfile's "data" filter, which refuses members that
would land outside it (``../``, absolute paths, links out), device files and the like.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.catalog import DatasetSpec
from pipeline.data.cifar import check_file_size
from pipeline.errors import DataError

log = logging.getLogger(__name__)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass
class SourceFolder:
    """A folder holding the dataset's original files, and how it was found."""

    folder: Path
    kind: str  # folder | archive | keras-cache | download
    origin: str  # what the user pointed at, for meta.json and messages
    archive_md5: str | None = None
    file_md5: dict[str, str] = field(default_factory=dict)
    checksum_status: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def open_source(
    spec: DatasetSpec, source: str | Path, scratch: Path, checksums: str = "strict",
    url: str | None = None,
) -> Iterator[SourceFolder]:
    """Yield the dataset folder for ``source``; temporary extractions are removed afterwards.

    ``scratch`` is where archives are extracted (a folder on the same disk as the outputs).
    ``url`` overrides the download address (tests point it at a closed local port).
    """
    kind, path = _locate(spec, source, url)
    origin = os.path.normpath(path)
    if path.is_dir():
        found = SourceFolder(_dataset_folder(spec, path), kind, origin)
        verify_checksums(spec, found, checksums)
        yield found
        return
    archive_md5 = _check_archive_checksum(spec, path, checksums)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=scratch) as tmp:
        log.info("extracting %s", path)
        safe_extract(path, Path(tmp), spec)
        found = SourceFolder(_dataset_folder(spec, Path(tmp), archive=path), kind, origin,
                             archive_md5=archive_md5)
        verify_checksums(spec, found, checksums)
        yield found


def _locate(spec: DatasetSpec, source: str | Path, url: str | None) -> tuple[str, Path]:
    if source == "keras-cache":
        return "keras-cache", _keras_cache_copy(spec)
    if source == "download":
        return "download", download(spec, url or spec.url)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: not found; {_how_to_point(spec)}")
    if path.is_file() and not path.name.endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{path}: not a folder or a .tar.gz/.tgz/.tar archive")
    return ("folder" if path.is_dir() else "archive"), path


def _how_to_point(spec: DatasetSpec) -> str:
    return (
        f"set prepare.source in params.yaml to a local {spec.folder} folder or {spec.archive} "
        f"(or to 'download' where the network is reachable)"
    )


def keras_datasets_dir() -> Path:
    """Where keras.datasets caches downloads: $KERAS_HOME/datasets or ~/.keras/datasets."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def _keras_cache_copy(spec: DatasetSpec) -> Path:
    base = keras_datasets_dir()
    candidates = [
        base / spec.keras_cache_dir / spec.folder,  # Keras 3 extraction
        base / spec.folder,  # Keras 2 extraction
        base / spec.archive,  # our own download
        base / f"{spec.keras_cache_dir}_archive",  # Keras 3 download
    ]
    for candidate in candidates:
        if candidate.is_dir() and all((candidate / name).is_file() for name in spec.files):
            return candidate
        if candidate.is_file():
            return candidate
    raise DataError(f"no {spec.title} in the Keras cache ({base}); {_how_to_point(spec)}")


def download(spec: DatasetSpec, url: str) -> Path:
    """Download the published archive through Keras, which verifies its SHA-256."""
    from keras.utils import get_file  # heavy import, only when really downloading

    target = keras_datasets_dir()
    log.info("downloading %s from %s into %s", spec.title, url, target)
    try:
        path = get_file(
            fname=spec.archive, origin=url, file_hash=spec.archive_sha256,
            hash_algorithm="sha256", cache_dir=str(target.parent), cache_subdir=target.name,
        )
    except Exception as exc:  # get_file raises plain Exception for network errors
        reason = " ".join(str(exc).split())
        if "hash" in reason.lower() or "corrupt" in reason.lower():
            raise DataError(f"downloaded {spec.title} from {url}, but it does not match the "
                            f"published SHA-256 ({reason}); nothing was used") from None
        raise DataError(
            f"could not download {spec.title} from {url} ({reason}); offline? "
            f"{_how_to_point(spec)}"
        ) from None
    return Path(path)


def safe_extract(archive: Path, destination: Path,
                 spec: DatasetSpec | None = None) -> None:
    """Extract a tar archive, refusing any member that would escape ``destination`` and, given
    the dataset's ``spec``, any member larger than a genuine file of that name can be (checked
    on the archive's index, before anything is written)."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                # The published archives hold plain relative paths; anything else is refused
                # outright, and the "data" filter below guards the extraction itself too.
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise DataError(f"{archive}: unsafe archive member {member.name!r} (absolute "
                                    "or leaving the folder); nothing was extracted")
                if spec is not None:
                    _check_member_size(archive, member, spec)
            if spec is not None and sum(m.size for m in members) > spec.max_archive_bytes:
                raise DataError(f"{archive}: expands to {sum(m.size for m in members):,} bytes, "
                                f"more than {spec.title} can ({spec.max_archive_bytes:,}); "
                                "nothing was extracted")
            tar.extractall(destination, filter="data")
    except tarfile.FilterError as exc:
        member = exc.tarinfo.name if exc.tarinfo else "?"
        raise DataError(
            f"{archive}: unsafe archive member {member!r} ({exc}); nothing was extracted "
            "outside a temporary folder"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{archive}: truncated or corrupt archive ({exc})") from None


def _check_member_size(archive: Path, member: tarfile.TarInfo, spec: DatasetSpec) -> None:
    name = Path(member.name).name
    limit = spec.max_bytes(name) if name in spec.files else max(map(spec.max_bytes, spec.files))
    if member.size > limit:
        raise DataError(f"{archive}: member {member.name!r} holds {member.size:,} bytes, more "
                        f"than a {spec.title} file can ({limit:,}); nothing was extracted")


def _dataset_folder(spec: DatasetSpec, path: Path, archive: Path | None = None) -> Path:
    """The folder that holds the files: ``path`` itself or ``path/<spec.folder>``."""
    for candidate in (path, path / spec.folder):
        if candidate.is_dir() and any((candidate / name).exists() for name in spec.files):
            missing = [name for name in spec.files if not (candidate / name).is_file()]
            if missing:
                raise DataError(f"{archive or candidate}: missing {spec.title} file(s) "
                                f"{', '.join(missing)}")
            return candidate
    raise DataError(
        f"{archive or path}: no {spec.title} files found (expected {', '.join(spec.files)} "
        f"in it or in a {spec.folder} folder inside)"
    )


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_archive_checksum(spec: DatasetSpec, archive: Path, mode: str) -> str:
    md5 = file_md5(archive)
    published_names = (spec.archive, f"{spec.keras_cache_dir}_archive")
    if archive.name in published_names and md5 != spec.archive_md5:
        _mismatch(archive, spec.archive_md5, md5, mode)
    return md5


def verify_checksums(spec: DatasetSpec, found: SourceFolder, mode: str) -> None:
    """Hash every input file; compare with the published MD5 where the name is a CIFAR name.

    strict: a mismatch is an error (the file is corrupt or not the original).
    warn: the mismatch is logged and recorded in meta.json, and prepare goes on.
    """
    for name in spec.files:
        check_file_size(found.folder / name, spec)  # before hashing or reading it
        md5 = file_md5(found.folder / name)
        found.file_md5[name] = md5
        expected = spec.file_md5.get(name)
        if expected is None:
            status = "unknown"
        elif md5 == expected:
            status = "verified"
        else:
            status = "mismatch"
            _mismatch(found.folder / name, expected, md5, mode)
        found.checksum_status[name] = status


def _mismatch(path: Path, expected: str, actual: str, mode: str) -> None:
    message = (
        f"{path}: MD5 {actual} does not match the published {expected}; the file is corrupt "
        f"or not the original"
    )
    if mode == "strict":
        raise DataError(message + " (fetch a fresh copy, or set prepare.checksums: warn to "
                                  "use it anyway)")
    log.warning("%s; going on because prepare.checksums is 'warn'", message)
