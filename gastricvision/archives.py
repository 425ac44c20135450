"""Extract zip and RAR archives into a folder without letting any member escape it.

Dataset downloads and zips of tiles uploaded to the app both go through
:func:`extract_archive`. Zip archives are read with :mod:`zipfile`. RAR archives (RAR4
and RAR5) are read with libarchive through its libarchive-c binding, because libarchive
is a maintained, open-source RAR reader that ships as a system package (libarchive13).

Member rules:

- Some members are skipped, each with a code and a reason in
  :attr:`ExtractReport.skipped`, and the other members are still extracted. Skipped are
  absolute paths and paths that contain ``..``, symbolic links, hard links, devices,
  FIFOs and sockets, and members whose name is empty or invalid or whose path another
  member already took. Zip members are also skipped when encrypted, compressed with an
  unsupported method, or when their data fails the CRC check.
- A nested archive (``.zip``, ``.rar``, ``.7z``, ``.tar``, ``.gz`` and so on) is extracted
  as an ordinary file and never opened. :attr:`ExtractReport.nested_archives` lists them,
  so the caller decides whether to extract them in turn, with their own limits.
- File modes, owners and times stored in the archive are not applied.
- An existing regular file in ``dest`` at a member's path is replaced. A member is
  skipped when an existing symbolic link or a file stands where it needs a folder, so
  that a link already in ``dest`` cannot redirect a write outside it.

Limits: the number of members, the total extracted size and the compression ratio. A
zip archive is checked against its central directory before anything is written, and
a RAR archive against its headers in a first pass; the bytes actually written are
counted against the same limits. A violation raises :class:`~gastricvision.errors.ArchiveError`
naming the archive and the limit.

Members are written to a hidden staging folder inside ``dest`` and moved into place only
after the whole archive was read within the limits, so a failed extraction leaves
nothing behind in ``dest``.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, NoReturn, Union

from .errors import ArchiveError

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_BYTES",
    "NESTED_ARCHIVE_SUFFIXES",
    "RATIO_CHECK_MIN_BYTES",
    "ArchiveSource",
    "ExtractReport",
    "SkippedMember",
    "archive_format",
    "extract_archive",
    "format_size",
]

logger = logging.getLogger(__name__)

ArchiveSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

# Defaults sized for an uploaded batch of tiles: 100,000 members and 4 GiB hold about
# 60,000 tiles of 224 px saved as PNG (about 60 KiB each) with room to spare. Dataset
# downloads pass their own limits.
DEFAULT_MAX_TOTAL_BYTES = 4 * 1024**3
DEFAULT_MAX_MEMBERS = 100_000
# PNG and JPEG tiles do not compress further (ratio near 1), uncompressed TIFF or BMP
# tiles reach about 2 to 10, while a zip bomb reaches 1,000 and more.
DEFAULT_MAX_RATIO = 100.0
# Members and archives that expand to less than this are exempt from the ratio limit:
# small text files often compress more than 100-fold and cannot fill a disk.
RATIO_CHECK_MIN_BYTES = 1024 * 1024

NESTED_ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".rar", ".7z", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".lz", ".lzma", ".cab", ".iso"}
)

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_RAR4_MAGIC = b"Rar!\x1a\x07\x00"
_RAR5_MAGIC = b"Rar!\x1a\x07\x01\x00"
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK_SIZE = 1024 * 1024
_MAX_LOGGED_SKIPS = 20


@dataclass(frozen=True)
class SkippedMember:
    """An archive member that was not extracted.

    Attributes:
        name: Member name as stored in the archive.
        code: Stable identifier for programs and tests: ``absolute_path``,
            ``path_traversal``, ``invalid_name``, ``symlink``, ``hardlink``,
            ``special_file``, ``encrypted``, ``unsupported_compression``, ``corrupt``,
            ``duplicate`` or ``conflict``.
        reason: One plain sentence for people.
    """

    name: str
    code: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "code": self.code, "reason": self.reason}


@dataclass
class ExtractReport:
    """Result of one :func:`extract_archive` call.

    Attributes:
        archive: Archive path or the name given for bytes.
        format: ``zip`` or ``rar``.
        dest: Absolute destination folder.
        files: Absolute paths of the extracted files, in archive order.
        skipped: Members left out, each with its reason.
        nested_archives: Extracted files whose suffix marks an archive; they were not opened.
        total_bytes: Bytes written for the extracted files.
    """

    archive: str
    format: str
    dest: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[SkippedMember] = field(default_factory=list)
    nested_archives: list[Path] = field(default_factory=list)
    total_bytes: int = 0

    def to_dict(self) -> dict:
        return {
            "archive": self.archive,
            "format": self.format,
            "dest": str(self.dest),
            "files": [str(path) for path in self.files],
            "skipped": [member.to_dict() for member in self.skipped],
            "nested_archives": [str(path) for path in self.nested_archives],
            "total_bytes": self.total_bytes,
        }


def format_size(num_bytes: float) -> str:
    """Format a byte count for messages, e.g. ``1.5 GiB``."""
    value = float(num_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            break
        value /= 1024
    if unit == "bytes":
        return f"{int(value):,} bytes"
    if unit == "GiB" and abs(value) >= 1024:
        return f"{value / 1024:.1f} TiB"
    return f"{value:.1f} {unit}"


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    name: str
    path: Path | None
    data: bytes | None
    size: int
    head: bytes


def _open_source(source: ArchiveSource, name: str | None) -> _Source:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _Source(name or "<archive bytes>", None, data, len(data), data[:16])

    path = Path(source)
    display = name or str(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise ArchiveError(f"{display}: archive not found; check the path.") from None
    except IsADirectoryError:
        raise ArchiveError(f"{display}: is a folder, not a zip or RAR archive.") from None
    except OSError as exc:
        raise ArchiveError(f"{display}: cannot read the archive ({exc.strerror}).") from None
    return _Source(display, path, None, size, head)


def _detect_format(source: _Source) -> str:
    if source.head.startswith(_RAR4_MAGIC) or source.head.startswith(_RAR5_MAGIC):
        return "rar"
    if source.head.startswith(_ZIP_MAGICS):
        return "zip"
    # A zip archive may start with other data (a self-extracting stub); zipfile finds
    # its central directory from the end.
    if zipfile.is_zipfile(source.path if source.path is not None else io.BytesIO(source.data)):
        return "zip"
    raise ArchiveError(
        f"{source.name}: not a zip or RAR archive (the file starts with {source.head[:8]!r}); "
        "only zip and RAR archives can be extracted."
    )


def archive_format(source: ArchiveSource, *, name: str | None = None) -> str:
    """Return ``"zip"`` or ``"rar"`` for an archive path or bytes.

    Raises:
        ArchiveError: The file is missing, unreadable or neither zip nor RAR.
    """
    return _detect_format(_open_source(source, name))


# --------------------------------------------------------------------------- member checks


class _Skip(Exception):
    """Raised for a member that must be skipped; caught in the extraction loop."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _member_path(name: str | bytes | None) -> PurePosixPath:
    """Turn a member name into a relative path below the destination, or raise _Skip."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise _Skip("invalid_name", "the name is empty, not valid text or contains a NUL byte")
    # Zip archives made on Windows sometimes use backslashes as separators, and a
    # Windows extractor would honour them, so they count as separators here too.
    text = name.replace("\\", "/")
    if text.startswith("/") or _WINDOWS_DRIVE.match(text):
        raise _Skip("absolute_path", "absolute path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _Skip("path_traversal", "the path contains '..' and could leave the destination")
    if not parts:
        raise _Skip("invalid_name", "the name contains no file or folder name")
    return PurePosixPath(*parts)


def _zip_member_kind(info: zipfile.ZipInfo) -> str:
    # Unix file type bits sit in the high 16 bits of the external attributes. Archives
    # made elsewhere leave them at zero, which reads as a regular file.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return "symlink"
    if file_type in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        return "special"
    if info.is_dir() or file_type == stat.S_IFDIR:
        return "dir"
    return "file"


# --------------------------------------------------------------------------- staging


class _StagingWriter:
    """Writes members below the staging folder and enforces the limits while writing."""

    def __init__(
        self,
        source: _Source,
        staging: Path,
        dest: Path,
        *,
        max_total_bytes: int,
        max_members: int,
        max_ratio: float,
    ):
        self.source = source
        self.staging = staging
        self.dest = dest
        self.max_total_bytes = max_total_bytes
        self.max_members = max_members
        self.max_ratio = max_ratio
        self.declared_bytes: int | None = None
        self.total_bytes = 0
        self.files: list[PurePosixPath] = []
        self.skipped: list[SkippedMember] = []

    # Limits -----------------------------------------------------------------

    def check_member_count(self, count: int) -> None:
        if count > self.max_members:
            raise ArchiveError(
                f"{self.source.name}: rejected, because it has more than "
                f"{self.max_members:,} members (the max_members limit); nothing was extracted."
            )

    def check_total(self, total: int, member: str) -> None:
        if total > self.max_total_bytes:
            raise ArchiveError(
                f"{self.source.name}: rejected, because its members expand to more than "
                f"{format_size(self.max_total_bytes)} (the max_total_bytes limit, reached at "
                f"{member!r}); nothing was extracted."
            )

    def check_member_ratio(self, size: int, compressed_size: int, member: str) -> None:
        if size > RATIO_CHECK_MIN_BYTES and size > self.max_ratio * max(compressed_size, 1):
            ratio = size / max(compressed_size, 1)
            raise ArchiveError(
                f"{self.source.name}: rejected as a likely zip bomb, because member {member!r} "
                f"expands {ratio:,.0f}-fold ({format_size(compressed_size)} to "
                f"{format_size(size)}), above the max_ratio limit of {self.max_ratio:g}; "
                "nothing was extracted."
            )

    def check_archive_ratio(self, total: int) -> None:
        if total > RATIO_CHECK_MIN_BYTES and total > self.max_ratio * max(self.source.size, 1):
            ratio = total / max(self.source.size, 1)
            raise ArchiveError(
                f"{self.source.name}: rejected as a likely archive bomb, because its "
                f"{format_size(self.source.size)} expand {ratio:,.0f}-fold to more than "
                f"{format_size(total)}, above the max_ratio limit of {self.max_ratio:g}; "
                "nothing was extracted."
            )

    def check_free_space(self, needed: int) -> None:
        self.declared_bytes = needed
        free = shutil.disk_usage(self.dest).free
        if needed > free:
            raise ArchiveError(
                f"{self.source.name}: extracting needs {format_size(needed)} in {self.dest}, "
                f"but only {format_size(free)} is free; free "
                f"{format_size(needed - free)} or choose another destination."
            )

    # Members ----------------------------------------------------------------

    def skip(self, name: str, code: str, reason: str) -> None:
        self.skipped.append(SkippedMember(str(name), code, reason))
        count = len(self.skipped)
        if count <= _MAX_LOGGED_SKIPS:
            logger.warning("%s: skipped member %r: %s", self.source.name, name, reason)
        elif count == _MAX_LOGGED_SKIPS + 1:
            logger.warning("%s: more members skipped; the report lists all of them", self.source.name)

    def make_dir(self, name: str, relative: PurePosixPath) -> None:
        try:
            self.staging.joinpath(*relative.parts).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            self.skip(name, "conflict", "a file in the archive has the same path as this folder")
        except OSError as exc:
            self._raise_for_os_error(exc, name)

    def write_file(
        self,
        name: str,
        relative: PurePosixPath,
        chunks: Iterable[bytes],
        compressed_size: int | None,
    ) -> None:
        """Write one member, or record it as skipped when its path is already taken.

        Exceptions raised while reading ``chunks`` propagate after the partly written
        file is removed and its bytes are taken off the running total.
        """
        target = self.staging.joinpath(*relative.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            self.skip(name, "conflict", "a file in the archive has the same path as a parent folder of this member")
            return
        except OSError as exc:
            self._raise_for_os_error(exc, name)
        try:
            handle = open(target, "xb")
        except FileExistsError:
            if target.is_dir():
                self.skip(name, "conflict", "a folder in the archive has the same path as this file")
            else:
                self.skip(name, "duplicate", "another member with the same path was extracted first")
            return
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                self.skip(name, "invalid_name", "the name is too long for the file system")
                return
            self._raise_for_os_error(exc, name)

        written = 0
        try:
            with handle:
                for chunk in chunks:
                    written += len(chunk)
                    self.total_bytes += len(chunk)
                    self.check_total(self.total_bytes, name)
                    if compressed_size is not None:
                        self.check_member_ratio(written, compressed_size, name)
                    self.check_archive_ratio(self.total_bytes)
                    handle.write(chunk)
        except BaseException as exc:
            self.total_bytes -= written
            target.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                self._raise_for_os_error(exc, name)
            raise
        self.files.append(relative)

    def _raise_for_os_error(self, exc: OSError, name: str) -> NoReturn:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            needed = (
                f"it needs {format_size(self.declared_bytes)} in total"
                if self.declared_bytes
                else f"the archive itself is {format_size(self.source.size)}"
            )
            raise ArchiveError(
                f"{self.source.name}: no space left in {self.dest} while extracting "
                f"{name!r} ({format_size(self.total_bytes)} written, then removed); {needed}. "
                "Free that much space or choose another destination."
            ) from None
        raise ArchiveError(
            f"{self.source.name}: cannot extract member {name!r} into {self.dest} ({exc.strerror or exc})."
        ) from None


class _SizedIterable:
    """An iterable with a known length, so that a progress bar can show a total."""

    def __init__(self, iterable: Iterable, length: int):
        self._iterable = iterable
        self._length = length

    def __iter__(self) -> Iterator:
        return iter(self._iterable)

    def __len__(self) -> int:
        return self._length


# --------------------------------------------------------------------------- zip


def _zip_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    # zipfile stops at the declared size and raises BadZipFile on a CRC mismatch, so a
    # member cannot expand past the size its central directory entry declares.
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK_SIZE):
            yield chunk


def _extract_zip(source: _Source, writer: _StagingWriter, progress) -> None:
    try:
        archive = zipfile.ZipFile(source.path if source.path is not None else io.BytesIO(source.data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ArchiveError(f"{source.name}: not a readable zip archive ({exc}).") from None
    except OSError as exc:
        raise ArchiveError(f"{source.name}: cannot read the archive ({exc.strerror or exc}).") from None

    with archive:
        infos = archive.infolist()
        writer.check_member_count(len(infos))

        planned: list[tuple[zipfile.ZipInfo, PurePosixPath, str]] = []
        for info in infos:
            try:
                relative = _member_path(info.filename)
                kind = _zip_member_kind(info)
                if kind == "symlink":
                    raise _Skip("symlink", "symbolic link")
                if kind == "special":
                    raise _Skip("special_file", "device, FIFO or socket")
                if kind == "file" and info.flag_bits & 0x1:
                    raise _Skip("encrypted", "encrypted member")
                if kind == "file" and info.compress_type not in _ZIP_METHODS:
                    raise _Skip(
                        "unsupported_compression",
                        f"compression method {info.compress_type} is not supported",
                    )
            except _Skip as skip:
                writer.skip(info.filename, skip.code, skip.reason)
                continue
            planned.append((info, relative, kind))

        # Check the declared sizes before writing anything.
        declared = 0
        for info, _, kind in planned:
            if kind != "file":
                continue
            declared += info.file_size
            writer.check_total(declared, info.filename)
            writer.check_member_ratio(info.file_size, info.compress_size, info.filename)
        writer.check_archive_ratio(declared)
        writer.check_free_space(declared)

        for info, relative, kind in progress(planned) if progress else planned:
            if kind == "dir":
                writer.make_dir(info.filename, relative)
                continue
            try:
                writer.write_file(info.filename, relative, _zip_chunks(archive, info), info.compress_size)
            except NotImplementedError as exc:
                writer.skip(info.filename, "unsupported_compression", str(exc))
            except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as exc:
                writer.skip(info.filename, "corrupt", f"the member data is corrupt ({exc})")


# --------------------------------------------------------------------------- RAR


@contextmanager
def _rar_entries(source: _Source):
    import libarchive
    from libarchive.exception import ArchiveError as LibarchiveError

    # Restrict libarchive to the one RAR reader this archive needs, so that a file that
    # only claims to be RAR is not parsed by any of libarchive's other format readers.
    reader_format = "rar5" if source.head.startswith(_RAR5_MAGIC) else "rar"
    try:
        if source.path is not None:
            context = libarchive.file_reader(str(source.path), format_name=reader_format, filter_name="none")
        else:
            context = libarchive.memory_reader(source.data, format_name=reader_format, filter_name="none")
        with context as reader:
            yield reader
    except LibarchiveError as exc:
        raise ArchiveError(
            f"{source.name}: cannot read the RAR archive ({exc.msg}); it may be corrupt, "
            "truncated or encrypted."
        ) from None


def _extract_rar(source: _Source, writer: _StagingWriter, progress) -> None:
    # First pass: headers only, to apply the member and size limits before writing.
    count = 0
    declared = 0
    with _rar_entries(source) as reader:
        for entry in reader:
            count += 1
            writer.check_member_count(count)
            if entry.isreg and not entry.islnk and entry.size:
                declared += entry.size
                writer.check_total(declared, str(entry.pathname))
    writer.check_archive_ratio(declared)
    writer.check_free_space(declared)

    # Second pass: write. RAR stores no per-member compressed size that libarchive
    # exposes, so the ratio is checked for the archive as a whole.
    # NOTE: member CRCs are checked only as far as libarchive checks them. libarchive
    # 3.6.2 returned a stored RAR4 member with a wrong CRC without an error, so for RAR
    # only a checksum of the whole archive (as downloads have) proves the data intact.
    with _rar_entries(source) as reader:
        entries = _SizedIterable(reader, count)
        seen = 0
        for entry in progress(entries) if progress else entries:
            seen += 1
            writer.check_member_count(seen)
            name = entry.pathname
            try:
                relative = _member_path(name)
                if entry.issym:
                    raise _Skip("symlink", f"symbolic link to {entry.linkpath!r}")
                if entry.islnk:
                    raise _Skip("hardlink", "hard link")
                if entry.isdev:
                    raise _Skip("special_file", "device, FIFO or socket")
                if not (entry.isdir or entry.isreg):
                    raise _Skip("special_file", f"unknown member type {entry.filetype:o}")
            except _Skip as skip:
                writer.skip(name if isinstance(name, str) else repr(name), skip.code, skip.reason)
                continue
            if entry.isdir:
                writer.make_dir(name, relative)
                continue
            writer.write_file(name, relative, entry.get_blocks(_CHUNK_SIZE), None)


# --------------------------------------------------------------------------- moving into place


def _files_below(folder: Path, prefix: PurePosixPath) -> list[PurePosixPath]:
    found = []
    for root, _, names in os.walk(folder):
        relative_root = PurePosixPath(prefix, *Path(root).relative_to(folder).parts)
        found.extend(relative_root / name for name in names)
    return found


def _merge_into(
    staged: Path,
    target: Path,
    prefix: PurePosixPath,
    writer: _StagingWriter,
    refused: set[PurePosixPath],
) -> None:
    """Move the contents of ``staged`` into ``target`` without following links in ``target``."""
    for entry in sorted(os.scandir(staged), key=lambda e: e.name):
        source = Path(entry.path)
        destination = target / entry.name
        relative = prefix / entry.name
        try:
            existing = os.lstat(destination)
        except FileNotFoundError:
            os.rename(source, destination)
            continue

        is_dir = entry.is_dir(follow_symlinks=False)
        if stat.S_ISLNK(existing.st_mode):
            reason = f"{destination} already exists as a symbolic link"
        elif is_dir and stat.S_ISDIR(existing.st_mode):
            _merge_into(source, destination, relative, writer, refused)
            continue
        elif not is_dir and stat.S_ISREG(existing.st_mode):
            os.replace(source, destination)
            continue
        else:
            kind = "folder" if stat.S_ISDIR(existing.st_mode) else "file"
            reason = f"{destination} already exists as a {kind}"

        members = _files_below(source, relative) if is_dir else [relative]
        for member in members:
            refused.add(member)
            writer.skip(member.as_posix(), "conflict", reason)


def _move_into_place(writer: _StagingWriter) -> list[PurePosixPath]:
    refused: set[PurePosixPath] = set()
    try:
        _merge_into(writer.staging, writer.dest, PurePosixPath(), writer, refused)
    except OSError as exc:
        raise ArchiveError(
            f"{writer.source.name}: cannot move the extracted files into {writer.dest} "
            f"({exc.strerror or exc}); nothing was kept."
        ) from None
    return [relative for relative in writer.files if relative not in refused]


# --------------------------------------------------------------------------- entry point


def _validate_limits(max_total_bytes: int, max_members: int, max_ratio: float) -> None:
    for label, value in (
        ("max_total_bytes", max_total_bytes),
        ("max_members", max_members),
        ("max_ratio", max_ratio),
    ):
        if not value > 0:
            raise ValueError(f"{label} must be positive, got {value!r}")


def _prepare_dest(dest: Path, archive_name: str) -> Path:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ArchiveError(f"{archive_name}: destination {dest} is a file; give a folder.") from None
    except OSError as exc:
        raise ArchiveError(
            f"{archive_name}: cannot create the destination folder {dest} ({exc.strerror})."
        ) from None
    return dest.resolve()


def extract_archive(
    source: ArchiveSource,
    dest: str | os.PathLike,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
    name: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> ExtractReport:
    """Extract a zip or RAR archive into ``dest``, skipping hostile members.

    See the module docstring for which members are skipped and how the limits apply.

    Args:
        source: Path of the archive, or its content as bytes (an upload).
        dest: Destination folder; created when missing.
        max_total_bytes: Largest total size of the extracted files, in bytes.
        max_members: Largest number of members (files, folders and skipped members).
        max_ratio: Largest ratio of extracted to compressed size, for each zip member
            and for the archive as a whole. It applies only from 1 MiB of extracted
            data on.
        name: Archive name for messages, e.g. the file name of an upload.
        progress: Optional callable taking an iterable of members and returning it
            (e.g. ``tqdm``).

    Returns:
        The extracted files and the skipped members, each with its reason.

    Raises:
        ArchiveError: The archive is missing, corrupt, not zip or RAR, over a limit, or
            the destination is full or not writable. Nothing is left behind in ``dest``.
        ValueError: A limit is not positive.
    """
    _validate_limits(max_total_bytes, max_members, max_ratio)
    archive = _open_source(source, name)
    archive_kind = _detect_format(archive)
    dest = _prepare_dest(Path(dest), archive.name)

    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    try:
        writer = _StagingWriter(
            archive,
            staging,
            dest,
            max_total_bytes=max_total_bytes,
            max_members=max_members,
            max_ratio=max_ratio,
        )
        if archive_kind == "zip":
            _extract_zip(archive, writer, progress)
        else:
            _extract_rar(archive, writer, progress)
        placed = _move_into_place(writer)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    files = [dest.joinpath(*relative.parts) for relative in placed]
    report = ExtractReport(
        archive=archive.name,
        format=archive_kind,
        dest=dest,
        files=files,
        skipped=writer.skipped,
        nested_archives=[path for path in files if path.suffix.lower() in NESTED_ARCHIVE_SUFFIXES],
        total_bytes=writer.total_bytes,
    )
    logger.info(
        "Extracted %s into %s: %d files, %s, %d members skipped",
        archive.name,
        dest,
        len(report.files),
        format_size(report.total_bytes),
        len(report.skipped),
    )
    return report
