"""Finding every file under a source folder, and every folder that could not be listed.

An object store's source is listed once (``fs.find``: one request per 1,000 keys); a local
folder, and any filesystem whose ``find`` is fsspec's generic walk (which silently leaves out a
folder it cannot list), is walked one folder at a time: symbolic links are followed on local
disk, a link back to a folder being walked is reported instead of followed, and a folder that
cannot be listed is reported with why. Hidden entries (a name starting with ``.``) are not
descended into.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any

from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem


def find_files(fs: AbstractFileSystem, root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every file under ``root`` and every folder that could not be listed, with why.

    A filesystem with its own recursive listing (an object store: one request per 1,000 keys)
    is listed with ``fs.find``; the others are walked folder by folder with ``fs.ls``, which
    fsspec's own ``find`` does too, but silently leaves out a folder it cannot list.

    Returns:
        ``(file paths, [(folder path, one-line reason), ...])``; hidden entries (a name starting
        with ``.``) are not descended into.

    Raises:
        OSError: ``fs.find`` failed (a walked filesystem reports failures in the second list,
            the root's included).
    """
    if not isinstance(fs, LocalFileSystem) and not finds_by_walking(fs):
        return [str(p) for p in fs.find(root, withdirs=False)], []
    return walk(fs, root)


def finds_by_walking(fs: AbstractFileSystem) -> bool:
    """Whether ``fs.find`` is fsspec's generic walk (one ``ls`` per folder, errors dropped)."""
    if isinstance(fs, AsyncFileSystem):
        return type(fs)._find is AsyncFileSystem._find
    return type(fs).find is AbstractFileSystem.find


def walk(fs: AbstractFileSystem, root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """:func:`find_files` folder by folder; on local disk links are followed, and a link to a
    folder that is already being walked (an ancestor, by device and inode) is reported, not
    followed."""
    local = isinstance(fs, LocalFileSystem)
    files: list[str] = []
    failures: list[tuple[str, str]] = []
    stack: list[tuple[str, frozenset[tuple[int, int]]]] = [
        (root, frozenset([folder_key(root)]) if local else frozenset())
    ]
    while stack:
        folder, ancestors = stack.pop()
        try:
            entries = fs.ls(folder, detail=True)
        except OSError as exc:
            failures.append((folder, cannot_list(fs, folder, exc)))
            continue
        for entry in entries:
            path = str(entry["name"]).rstrip("/")
            if path == folder.rstrip("/") or posixpath.basename(path).startswith("."):
                continue
            if entry_kind(fs, entry) != "directory":
                files.append(path)  # a broken link too: reading it gives its errors row
                continue
            if not local:
                stack.append((path, ancestors))
                continue
            try:
                key = folder_key(path)
            except OSError as exc:
                failures.append((path, cannot_list(fs, path, exc)))
                continue
            if key in ancestors:
                failures.append(
                    (
                        path,
                        f"symbolic link loop: {fs.unstrip_protocol(path)} leads back to "
                        f"{os.path.realpath(path)}, a folder it lies in; not followed",
                    )
                )
                continue
            stack.append((path, ancestors | {key}))
    return files, failures


def entry_kind(fs: AbstractFileSystem, entry: Mapping[str, Any]) -> str:
    """An ``ls`` entry's type, a local symbolic link's being its target's."""
    if entry.get("islink") and isinstance(fs, LocalFileSystem):
        return "directory" if os.path.isdir(str(entry["name"])) else "file"
    return str(entry.get("type"))


def folder_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def cannot_list(fs: AbstractFileSystem, path: str, exc: OSError) -> str:
    detail = exc.strerror or str(exc) or "no reason given"
    return f"{type(exc).__name__}: cannot list folder {fs.unstrip_protocol(path)}: {detail}"
