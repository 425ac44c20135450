"""Folders a front end may browse for datasets, and paths confined to them.

A web front end must not let its users read arbitrary folders of the server. The
folders it may browse are listed in ``GASTRICVISION_DATA_ROOTS``, separated by
``os.pathsep`` (``:`` on Linux and macOS). Without it, ``~/data`` is used when it
exists, because the README's download commands put the datasets there.

:func:`resolve_inside` accepts only a relative path below one of those folders: an
absolute path, a ``~`` path or a ``..`` component is rejected, and so is a path that a
symbolic link takes outside the folder once resolved. :func:`paths_outside` finds the
files of an opened dataset that a symbolic link anywhere on their path takes outside it.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Mapping

from .errors import DatasetError

__all__ = ["DATA_ROOTS_ENV", "configured_roots", "paths_outside", "resolve_inside", "subfolders"]

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
    try:
        exists, is_dir = candidate.exists(), candidate.is_dir()
    except OSError as exc:  # for example a name longer than the file system allows
        raise DatasetError(
            f"{_shorten(text)}: cannot open this folder in {root_path} ({exc.strerror}); check the name."
        ) from None
    if not exists:
        raise DatasetError(f"{text}: folder not found in {root_path}; check the name.")
    if not is_dir:
        raise DatasetError(f"{text}: is a file, not a folder; give the folder that contains the class folders.")
    return candidate


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def paths_outside(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> list[Path]:
    """Find the paths that a symbolic link takes outside ``root`` once resolved.

    The link may be the file itself or any folder on its way. A path that cannot be
    resolved counts as outside. Each parent folder is resolved once, so a dataset of
    many files in a few class folders costs one ``realpath`` per folder and one
    ``lstat`` per file.
    """
    root_path = Path(os.path.realpath(root))
    parents_inside: dict[str, bool] = {}
    outside: list[Path] = []
    for path in paths:
        text = os.fspath(path)
        parent = os.path.dirname(text)
        try:
            if parent not in parents_inside:
                parents_inside[parent] = _is_within(Path(os.path.realpath(parent)), root_path)
            inside = parents_inside[parent] and (
                not os.path.islink(text) or _is_within(Path(os.path.realpath(text)), root_path)
            )
        except OSError:
            inside = False
        if not inside:
            outside.append(Path(text))
    return outside


def subfolders(folder: str | os.PathLike, root: str | os.PathLike, limit: int = 60) -> list[str]:
    """Names of the visible sub-folders of ``folder`` that stay inside ``root``, sorted.

    At most ``limit`` names are returned; unreadable folders give an empty list, and
    entries that cannot be examined (a symbolic link loop) are left out.
    """
    root_path = Path(os.path.realpath(root))
    names: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return []
    for entry in entries:
        try:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            if not _is_within(Path(os.path.realpath(entry.path)), root_path):
                continue
        except OSError:
            continue
        names.append(entry.name)
        if len(names) >= limit:
            break
    return names
