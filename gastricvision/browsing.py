"""Folders a front end may browse for datasets, and paths confined to them.

A web front end must not let its users read arbitrary folders of the server. The
folders it may browse are listed in ``GASTRICVISION_DATA_ROOTS``, separated by
``os.pathsep`` (``:`` on Linux and macOS). Without it, ``~/data`` is used when it
exists, because the README's download commands put the datasets there.

:func:`resolve_inside` accepts only a relative path below one of those folders: an
absolute path, a ``~`` path or a ``..`` component is rejected, and so is a path that a
symbolic link takes outside the folder once resolved.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Mapping

from .errors import DatasetError

__all__ = ["DATA_ROOTS_ENV", "configured_roots", "resolve_inside", "subfolders"]

DATA_ROOTS_ENV = "GASTRICVISION_DATA_ROOTS"


def configured_roots(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Existing folders the front end may browse, resolved, without duplicates.

    Args:
        environ: Environment to read (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    configured = environ.get(DATA_ROOTS_ENV)
    if configured is None:
        candidates = [Path("~/data")]
    else:
        candidates = [Path(item) for item in configured.split(os.pathsep) if item.strip()]

    roots: list[Path] = []
    for candidate in candidates:
        resolved = Path(os.path.realpath(candidate.expanduser()))
        if resolved.is_dir() and resolved not in roots:
            roots.append(resolved)
    return roots


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_inside(root: str | os.PathLike, relative: str) -> Path:
    """Resolve ``relative`` below ``root`` and return the real path of that folder.

    Raises:
        DatasetError: ``relative`` is absolute, starts with ``~``, contains ``..`` or a
            NUL byte, leaves ``root`` through a symbolic link, or is not an existing
            folder.
    """
    root_path = Path(os.path.realpath(Path(root).expanduser()))
    text = (relative or "").strip()
    if "\x00" in text:
        raise DatasetError("Invalid folder name: it contains a NUL character.")
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or text.startswith(("\\", "~")):
        raise DatasetError(
            f"{text}: give a folder relative to {root_path}, not an absolute or home path."
        )
    if ".." in posix.parts or ".." in windows.parts:
        raise DatasetError(f"{text}: '..' is not allowed; give a folder inside {root_path}.")

    candidate = Path(os.path.realpath(root_path / posix))
    if not _is_within(candidate, root_path):
        raise DatasetError(
            f"{text}: a symbolic link leads outside {root_path}; only folders inside it can be opened."
        )
    if not candidate.exists():
        raise DatasetError(f"{text}: folder not found in {root_path}; check the name.")
    if not candidate.is_dir():
        raise DatasetError(f"{text}: is a file, not a folder; give the folder that contains the class folders.")
    return candidate


def subfolders(folder: str | os.PathLike, root: str | os.PathLike, limit: int = 60) -> list[str]:
    """Names of the visible sub-folders of ``folder`` that stay inside ``root``, sorted.

    At most ``limit`` names are returned; unreadable folders give an empty list.
    """
    root_path = Path(os.path.realpath(root))
    names: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not _is_within(Path(os.path.realpath(entry.path)), root_path):
            continue
        names.append(entry.name)
        if len(names) >= limit:
            break
    return names
