"""Zips and folders of an upload, listed and read into memory within the limits; nothing is extracted to disk.

Every entry's name, type, size and compression ratio is checked from the zip directory before anything is read;
links are never followed; a zip's declared sizes are re-checked against the bytes really read.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hora.data.common import _RATIO_FLOOR, DataError, DataLimits, _is_junk, _read_file, _size, _unsafe_reason


@dataclass
class _Tree:
    """The files of an uploaded zip or folder, OS junk left out, read into memory on demand within the limits."""

    source: str  # the upload's name, for messages
    files: dict[str, int]  # relative posix name -> size (declared, for a zip)
    dirs: set[str]
    opener: Callable[[str, int], bytes]  # (original name, max bytes) -> bytes
    limits: DataLimits
    prefix: str = ""  # the stripped wrapper folder
    read_bytes: int = 0

    def where(self, name: str) -> str:
        return f"{self.prefix}{name} in {self.source}"

    def read(self, name: str) -> bytes:
        """The bytes of one file; real bytes are counted, since a zip's declared sizes can lie."""
        budget = self.limits.max_total_bytes - self.read_bytes
        data = self.opener(self.prefix + name, min(self.limits.max_file_bytes, budget))
        self.read_bytes += len(data)
        if len(data) > self.limits.max_file_bytes:
            raise DataError(f"{self.where(name)} is larger than {_size(self.limits.max_file_bytes)}, the file limit.")
        if self.read_bytes > self.limits.max_total_bytes:
            raise DataError(f"{self.source} holds more than {_size(self.limits.max_total_bytes)} of data, the limit.")
        if not data:
            raise DataError(f"{self.where(name)} is empty.")
        return data

    def strip_wrapper(self) -> None:
        """Drop one folder that holds everything else (data/cat/1.png -> cat/1.png)."""
        tops = {n.split("/")[0] for n in [*self.files, *self.dirs]}
        nested = all("/" in n for n in self.files) and any(n.count("/") >= 2 for n in [*self.files, *self.dirs])
        if len(tops) == 1 and nested:
            self.prefix = f"{tops.pop()}/"
            cut = len(self.prefix)
            self.files = {n[cut:]: s for n, s in self.files.items()}
            self.dirs = {d[cut:] for d in self.dirs if d.startswith(self.prefix)}


def _zip_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if not info.flag_bits & 0x800:
        # No UTF-8 flag: zipfile decoded the name as cp437, but many tools write UTF-8 without saying so.
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    return name


def _check_zip_entries(zf: zipfile.ZipFile, source: str, limits: DataLimits, archive_bytes: int) -> _Tree:
    """Check every entry's name, type, size and ratio from the zip directory, before reading anything."""
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise DataError(f"{source} has {len(infos):,} entries; the limit is {limits.max_files:,}.")
    files: dict[str, int] = {}
    dirs: set[str] = set()
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = _zip_name(info)
        reason = _unsafe_reason(name)
        if reason:
            raise DataError(f"{source} is refused: the entry {name!r} {reason}. Zip the folder itself, not a path.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{source} is refused: {name!r} is a symbolic link. Zip the files themselves.")
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        junk = next((i for i, p in enumerate(parts) if _is_junk(p)), None)
        # Folders are listed even when they only hold junk, as in a folder upload: fish/.DS_Store is an empty class.
        kept = (parts if info.is_dir() else parts[:-1])[:junk]  # the folders above the first junk part
        dirs.update("/".join(kept[:i]) for i in range(1, len(kept) + 1))
        if not parts or junk is not None or info.is_dir():
            continue
        name = "/".join(parts)
        if info.flag_bits & 0x1:
            raise DataError(f"{name} in {source} is password-protected; upload a zip without a password.")
        if info.file_size > limits.max_file_bytes:
            limit = _size(limits.max_file_bytes)
            raise DataError(f"{name} in {source} is {_size(info.file_size)}; the limit for one file is {limit}.")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > limits.max_compression_ratio:
            raise DataError(
                f"{name} in {source} expands {ratio:.0f}x (the limit is {limits.max_compression_ratio:.0f}x); "
                "this looks like a zip bomb and is refused."
            )
        total += info.file_size
        files[name] = info.file_size
        members[name] = info
    if total > limits.max_total_bytes:
        raise DataError(
            f"{source} unpacks to {_size(total)}; the limit is {_size(limits.max_total_bytes)}. Upload fewer files."
        )
    if total > _RATIO_FLOOR and total / max(archive_bytes, 1) > limits.max_compression_ratio:
        raise DataError(
            f"{source} expands {total / max(archive_bytes, 1):.0f}x (the limit is "
            f"{limits.max_compression_ratio:.0f}x); this looks like a zip bomb and is refused."
        )

    def opener(name: str, max_bytes: int) -> bytes:
        try:
            with zf.open(members[name]) as f:
                return f.read(max_bytes + 1)
        except Exception as err:  # zipfile, zlib, bz2 and lzma raise many types on damaged data
            raise DataError(f"{name} in {source} could not be unpacked ({err}); the zip may be damaged.") from err

    return _Tree(source, files, dirs, opener, limits)


def _walk_folder(root: Path, limits: DataLimits) -> _Tree:
    """List a folder without following links; refuse links, special files and anything over the limits."""
    files: dict[str, int] = {}
    dirs: set[str] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a linked folder is listed, not entered
        dirnames[:] = sorted(d for d in dirnames if not _is_junk(d))
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            if _is_junk(name):
                continue
            rel = (here / name).relative_to(root).as_posix()
            st = os.lstat(here / name)
            if stat.S_ISLNK(st.st_mode):
                raise DataError(
                    f"{rel} in {root.name} is a symbolic link; links are not followed. Copy the files themselves."
                )
            if stat.S_ISDIR(st.st_mode):
                dirs.add(rel)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size > limits.max_file_bytes:
                    limit = _size(limits.max_file_bytes)
                    raise DataError(f"{rel} in {root.name} is {_size(st.st_size)}; the limit for one file is {limit}.")
                files[rel] = st.st_size
                total += st.st_size
            else:
                raise DataError(f"{rel} in {root.name} is not a regular file or folder.")
            if len(files) + len(dirs) > limits.max_files:
                raise DataError(f"{root.name} has more than {limits.max_files:,} files and folders, the limit.")
            if total > limits.max_total_bytes:
                raise DataError(f"{root.name} holds more than {_size(limits.max_total_bytes)}, the limit.")

    def opener(name: str, max_bytes: int) -> bytes:
        return _read_file(root / name, f"{name} in {root.name}", max_bytes)

    return _Tree(root.name, files, dirs, opener, limits)


@contextmanager
def _open_tree(path: Path, limits: DataLimits) -> Iterator[_Tree]:
    """The files of a zip or folder, with one wrapper folder stripped."""
    if path.is_dir():
        tree = _walk_folder(path, limits)
        tree.strip_wrapper()
        yield tree
        return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DataError(f"{path.name} is not a valid zip file ({err}).") from err
    with zf:
        tree = _check_zip_entries(zf, path.name, limits, path.stat().st_size)
        tree.strip_wrapper()
        yield tree
