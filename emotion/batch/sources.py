"""Where the images come from: a folder (read recursively), a text file listing paths, or a URI.

Paths are kept as strings, exactly as they will appear in the ``path`` column, so a re-run finds what
an earlier run wrote. Local paths are made absolute (symlinks are *not* resolved: two links to one photo
stay two images); URIs (``s3://``, ``gs://``, ``file://``...) are read through pyarrow's file systems,
so the same code reads a shared folder and a bucket.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from emotion.batch.errors import BatchError

# What a folder listing takes as an image: the formats emotion.image reads. Other files in a photo
# folder (.txt, .json, Thumbs.db...) are not images and would only add error rows; a file *listed*
# explicitly in a text file is always taken, whatever its name.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".qoi", ".ppm", ".pgm"}
)


def is_uri(path: str) -> bool:
    return "://" in path


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def list_images(source: str | os.PathLike) -> list[str]:
    """Every image under ``source``, sorted: a folder (recursively), a text file of paths, or a URI folder."""
    source = os.fspath(source)
    if is_uri(source):
        return _list_uri(source)
    path = Path(source)
    if path.is_dir():
        return _list_folder(path)
    if path.is_file():
        return _read_list(path)
    raise BatchError(f"SOURCE '{source}' does not exist: give a folder of images or a text file listing them.")


def _list_folder(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .cache, .ipynb_checkpoints...
        found.extend(os.path.abspath(os.path.join(root, name)) for name in files if is_image_name(name))
    return sorted(found)


def _read_list(list_file: Path) -> list[str]:
    """One path per line; blank lines and lines starting with # are skipped; relative paths are relative
    to the list file's folder (so a list travels with its photos)."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BatchError(f"SOURCE '{list_file}' is neither a folder nor a text file listing image paths.") from exc
    paths = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_uri(entry):
            entry = os.path.abspath(os.path.join(list_file.parent, os.path.expanduser(entry)))
        paths.append(entry)
    return list(dict.fromkeys(paths))  # a path listed twice is one image: one set of rows


def _filesystem(uri: str):
    """(pyarrow file system, path inside it) for a URI; clear errors for unknown schemes and missing modules."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError, ImportError) as exc:
        raise BatchError(f"Cannot open '{uri}': {exc}") from exc


def _list_uri(uri: str) -> list[str]:
    from pyarrow import fs

    filesystem, base = _filesystem(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(base)
    if info.type == fs.FileType.NotFound:
        raise BatchError(f"SOURCE '{uri}' does not exist.")
    if info.type == fs.FileType.File:
        raise BatchError(f"SOURCE '{uri}' is a file: a URI source must be a folder (prefix) of images.")
    infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    names = (i.path for i in infos if i.type == fs.FileType.File and is_image_name(i.base_name))
    return sorted(f"{scheme}://{name}" for name in names)


# Object stores whose URIs read "scheme://bucket/key", the key path inside the file system being "bucket/key".
_BUCKET_SCHEMES = ("s3", "gs", "gcs")


@functools.lru_cache(maxsize=16)
def _cached_filesystem(root: str):
    # One client per bucket and worker: building an S3 client per file would cost more than the read.
    return _filesystem(root)[0]


def read_source(path: str) -> str | bytes:
    """What emotion.image.load_image reads: the local path itself, or the bytes behind a URI."""
    if not is_uri(path):
        return path
    scheme, rest = path.split("://", 1)
    if scheme == "file":
        filesystem, inner = _cached_filesystem("file:///"), rest
    elif scheme in _BUCKET_SCHEMES:
        filesystem, inner = _cached_filesystem(f"{scheme}://{rest.split('/', 1)[0]}"), rest
    else:
        filesystem, inner = _filesystem(path)
    with filesystem.open_input_stream(inner) as stream:
        return stream.readall()
