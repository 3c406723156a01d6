"""Read CIFAR-10-like data from the places users keep it.

A source is one of:
- ``cifar10``: download the official python archive (needs internet) into a cache, then read it;
- the official CIFAR-10 python archive (``cifar-10-python.tar.gz``) or its extracted folder;
- an image-folder tree ``<root>/train/<class>/*`` with an optional ``<root>/test/<class>/*``
  (a single top-level folder above train/ is allowed, as in ``cifar10/train/...``);
- a ``.tar`` / ``.tar.gz`` / ``.tgz`` of such a tree.
Every reader yields ``(split, class_name, name, pixels)`` with pixels already 32x32 RGB uint8.
"""

from __future__ import annotations

import pickle
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from pipeline.data.decode import IMAGE_SUFFIXES, DecodeReport, decode_image
from pipeline.errors import DataError
from pipeline.files import atomic_path

SPLITS = ("train", "test")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


@dataclass(frozen=True)
class Record:
    split: str
    label: str
    name: str
    pixels: np.ndarray


def _split_and_class(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """Find ``<split>/<class>/<file>`` at the end of a path, allowing one wrapper folder."""
    if len(parts) >= 3 and parts[-3] in SPLITS:
        return parts[-3], parts[-2]
    return None


def _check_layout(found: dict[str, dict[str, int]], source: str) -> None:
    if "train" not in found:
        raise DataError(
            f"{source}: no train/<class>/<image> files found; expected an image-folder tree like "
            "train/airplane/0001.jpg (optionally test/...), a tarball of one, or the CIFAR-10 python archive"
        )
    for split, classes in found.items():
        empty = sorted(c for c, n in classes.items() if n == 0)
        if empty:
            raise DataError(f"{source}: class folder {split}/{empty[0]} has no readable images")


def iter_tree(root: Path, report: DecodeReport) -> Iterator[Record]:
    """Read an image-folder tree on disk."""
    base = root
    if not (root / "train").is_dir():
        subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) == 1 and (subdirs[0] / "train").is_dir():
            base = subdirs[0]
    found: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        stray = [p.name for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if stray:
            raise DataError(
                f"{split_dir}: images directly under {split}/ ({stray[0]}...); put each image in a class folder {split}/<class>/"
            )
        found[split] = {}
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [(c.name, f) for c in class_dirs for f in sorted(c.iterdir()) if f.is_file()]
        for c in class_dirs:
            found[split][c.name] = 0
        for label, f in tqdm(files, desc=f"read {split}", unit="img", leave=False, disable=None):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                report.not_images.append(str(f))
                continue
            pixels = decode_image(f.read_bytes(), str(f), report)
            if pixels is not None:
                found[split][label] += 1
                yield Record(split, label, f.name, pixels)
    _check_layout(found, str(root))


def iter_tarball(path: Path, report: DecodeReport) -> Iterator[Record]:
    """Stream an image-folder tree out of a tar/tar.gz without extracting it to disk."""
    found: dict[str, dict[str, int]] = {}
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path}: not a readable tar archive ({exc})") from exc
    with tar, tqdm(desc=f"read {path.name}", unit="img", leave=False, disable=None) as bar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.isdir():
                if len(parts) >= 2 and parts[-2] in SPLITS:
                    found.setdefault(parts[-2], {}).setdefault(parts[-1], 0)
                continue
            if not member.isfile():
                continue
            where = _split_and_class(parts)
            if where is None:
                if PurePosixPath(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    raise DataError(
                        f"{path}: {member.name} is not inside <split>/<class>/; expected train/<class>/<image>"
                    )
                continue
            split, label = where
            found.setdefault(split, {}).setdefault(label, 0)
            if PurePosixPath(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                report.not_images.append(member.name)
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            pixels = decode_image(fh.read(), member.name, report)
            bar.update()
            if pixels is not None:
                found[split][label] += 1
                yield Record(split, label, parts[-1], pixels)
    _check_layout(found, str(path))


def _unpickle(data: bytes) -> dict:
    return pickle.loads(data, encoding="bytes")


def iter_cifar_python(path: Path, report: DecodeReport) -> Iterator[Record]:
    """Read the official CIFAR-10 python archive (tar.gz) or its extracted folder."""
    blobs: dict[str, bytes] = {}
    if path.is_dir():
        for f in path.rglob("*"):
            if f.name in ("batches.meta", "test_batch") or f.name.startswith("data_batch_"):
                blobs[f.name] = f.read_bytes()
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if member.isfile() and (name in ("batches.meta", "test_batch") or name.startswith("data_batch_")):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        blobs[name] = fh.read()
    if "batches.meta" not in blobs or not any(k.startswith("data_batch_") for k in blobs):
        raise DataError(f"{path}: not a CIFAR-10 python archive (batches.meta / data_batch_* missing)")
    classes = [c.decode() for c in _unpickle(blobs["batches.meta"])[b"label_names"]]
    batches = sorted(k for k in blobs if k.startswith("data_batch_")) + (["test_batch"] if "test_batch" in blobs else [])
    for key in batches:
        split = "test" if key == "test_batch" else "train"
        batch = _unpickle(blobs[key])
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        names = [n.decode() for n in batch[b"filenames"]]
        for pixels, label, name in zip(data, batch[b"labels"], names, strict=True):
            report.decoded += 1
            yield Record(split, classes[label], name, np.ascontiguousarray(pixels))


def download_cifar10(cache_dir: Path) -> Path:
    """Download the official archive once into ``cache_dir`` and verify its checksum.

    The archive only takes its name once complete and verified, so an interrupted or corrupt
    download is never mistaken for a cached copy.
    """
    import hashlib  # md5: the checksum the archive is published with, not one of our hashes

    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / "cifar-10-python.tar.gz"
    if target.exists():
        return target
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(CIFAR10_URL, timeout=60) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc="download CIFAR-10", disable=None) as bar:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as exc:
            raise DataError(
                f"could not download CIFAR-10 from {CIFAR10_URL} ({exc}); offline? pass a local copy instead: "
                "autoaug ingest /path/to/cifar-10-python.tar.gz (or an image-folder tree / tarball)"
            ) from exc
        digest = hashlib.md5(tmp.read_bytes()).hexdigest()
        if digest != CIFAR10_MD5:
            raise DataError(f"downloaded CIFAR-10 archive has md5 {digest}, expected {CIFAR10_MD5}")
    return target


def _is_cifar_python(path: Path) -> bool:
    if path.is_dir():
        return (path / "batches.meta").exists() or (path / "cifar-10-batches-py" / "batches.meta").exists()
    try:
        with tarfile.open(path, "r:*") as tar:
            for i, member in enumerate(tar):
                if PurePosixPath(member.name).name == "batches.meta":
                    return True
                if i > 20:
                    return False
    except (tarfile.TarError, OSError):
        return False
    return False


def iter_source(source: str, report: DecodeReport, cache_dir: Path | None = None) -> Iterator[Record]:
    """Dispatch on what ``source`` is; raise DataError for anything unusable."""
    if source == "cifar10":
        path = download_cifar10(cache_dir or Path.home() / ".cache" / "autoaug")
        return iter_cifar_python(path, report)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{source}: no such file or directory")
    if path.is_dir():
        if not any(path.iterdir()):
            raise DataError(f"{source}: the folder is empty")
        if _is_cifar_python(path):
            return iter_cifar_python(path, report)
        return iter_tree(path, report)
    if path.stat().st_size == 0:
        raise DataError(f"{source}: the file is empty")
    if not tarfile.is_tarfile(path):
        raise DataError(f"{source}: not a folder or a .tar/.tar.gz archive")
    if _is_cifar_python(path):
        return iter_cifar_python(path, report)
    return iter_tarball(path, report)
