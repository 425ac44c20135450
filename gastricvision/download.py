"""Download GasHisSDB and GCHTID from figshare, check them and extract them.

:func:`download_dataset` runs these steps:

1. Read the article's file list from the figshare API (``GET {api}/articles/{id}``) and
   find the dataset's archive in it by name, with its size and MD5.
2. Stream the archive to ``DEST/<name>.part`` with a progress bar. After an interruption
   the transfer resumes with an HTTP ``Range`` request, both within one run (retries with
   backoff) and in a later run (the ``.part`` file is kept).
3. Check the size and MD5, then rename the file to ``DEST/<name>``.
4. Extract it with :func:`gastricvision.archives.extract_archive` within limits derived
   from the archive size and the published tile count.
5. Record the extraction in ``DEST/.gastricvision-<dataset>.json``, so that a second run
   with the same remote MD5 skips steps 2 to 4.

:func:`verify_download` then compares the extracted folder with the published totals.

The API base URL comes from the ``api_url`` argument, else the environment variable
``GASTRICVISION_FIGSHARE_API``, else https://api.figshare.com/v2.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

import requests
import urllib3

from . import __version__
from .archives import ExtractReport, extract_archive, format_size
from .datasets import PUBLISHED_COUNTS, VerifyReport, size_folder_tile_size, verify_dataset
from .errors import DatasetError, DownloadError

__all__ = [
    "API_URL_ENV",
    "DEFAULT_API_URL",
    "DATASET_SOURCES",
    "DatasetSource",
    "DownloadResult",
    "DownloadVerification",
    "RemoteFile",
    "download_dataset",
    "fetch_remote_file",
    "resolve_api_url",
    "verify_download",
]

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.figshare.com/v2"
API_URL_ENV = "GASTRICVISION_FIGSHARE_API"

# PNG tiles barely compress, so a tile archive expands to about its own size. Ten times
# the archive size leaves room for any real archive and still stops a bomb early.
EXTRACT_SIZE_FACTOR = 10
# Status codes worth retrying: rate limiting and server or gateway failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_METADATA_BYTES = 10 * 1024 * 1024
MAX_MARKER_SKIPPED = 100
CHUNK_SIZE = 1024 * 1024
_MD5_PATTERN = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class DatasetSource:
    """A dataset published as one archive in a figshare article.

    Attributes:
        key: Name on the command line, e.g. ``gashissdb``.
        title: Name for people.
        article_id: figshare article id.
        archive_name: File name of the archive in the article's file list.
        layout: Layout that :mod:`gastricvision.datasets` should detect after extraction.
        max_members: Most archive members accepted when extracting.
    """

    key: str
    title: str
    article_id: int
    archive_name: str
    layout: str
    max_members: int

    @property
    def article_page(self) -> str:
        return f"https://figshare.com/articles/dataset/{self.article_id}"

    @property
    def published_sizes(self) -> list[int | None]:
        """Tile sizes with published totals, largest first."""
        sizes = [size for layout, size in PUBLISHED_COUNTS if layout == self.layout]
        return sorted(sizes, key=lambda size: -(size or 0))


def _published_tiles(layout: str) -> int:
    return sum(sum(counts.values()) for (name, _), counts in PUBLISHED_COUNTS.items() if name == layout)


# NOTE: the archive names come from third-party scripts and dataset cards that download
# these articles, not from a live API response (none was reachable while this was written).
# A changed name raises DownloadError listing the names the article does have.
DATASET_SOURCES: dict[str, DatasetSource] = {
    "gashissdb": DatasetSource(
        key="gashissdb",
        title="GasHisSDB",
        article_id=15066147,
        archive_name="GasHisSDB.rar",
        layout="gashissdb",
        # Twice the published tile count leaves room for folder members.
        max_members=2 * _published_tiles("gashissdb"),
    ),
    "gchtid": DatasetSource(
        key="gchtid",
        title="GCHTID (HMU-GC-HE-30K)",
        article_id=25954813,
        archive_name="HMU-GC-HE-30K.zip",
        layout="gchtid",
        max_members=2 * _published_tiles("gchtid"),
    ),
}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a figshare article, as the API lists it.

    Attributes:
        name: File name.
        size: Size in bytes.
        md5: Lower-case hex MD5 (``computed_md5``, else ``supplied_md5``), or None when
            the article gives neither.
        url: Download URL.
    """

    name: str
    size: int
    md5: str | None
    url: str


@dataclass
class DownloadResult:
    """What :func:`download_dataset` did.

    Attributes:
        source: The dataset.
        dest: Destination folder.
        root: Folder that contains the extracted dataset, for :func:`verify_download`.
        archive: Path of the verified archive, or None when it was removed or never
            needed in this run.
        md5: MD5 the archive was checked against, or None when the article lists none.
        downloaded_bytes: Bytes transferred in this run.
        resumed_from: Size of the ``.part`` file found at the start, in bytes.
        extract_report: Result of the extraction, or None when an earlier run had
            already extracted the same archive.
    """

    source: DatasetSource
    dest: Path
    root: Path
    archive: Path | None
    md5: str | None = None
    downloaded_bytes: int = 0
    resumed_from: int = 0
    extract_report: ExtractReport | None = None


@dataclass
class DownloadVerification:
    """Verify reports of an extracted download, one per published tile size.

    Attributes:
        reports: One report per sub-database found.
        problems: Sub-databases that are missing or folders with the wrong layout.
    """

    reports: list[VerifyReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems and all(report.complete for report in self.reports)

    def lines(self) -> list[str]:
        lines = []
        for report in self.reports:
            lines.extend(report.lines())
        lines.extend(f"problem: {problem}" for problem in self.problems)
        return lines


# --------------------------------------------------------------------------- HTTP


def resolve_api_url(api_url: str | None = None) -> str:
    """Return the figshare API base URL: the argument, else $GASTRICVISION_FIGSHARE_API, else the public API."""
    url = api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"Invalid figshare API URL {url!r}: give an http:// or https:// URL.")
    return url.rstrip("/")


def _new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = f"gastricvision/{__version__} (dataset download)"
    return session


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and every exception it wraps, through causes, contexts and reasons."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return found


def _describe_connection_error(exc: BaseException) -> str:
    """Name the cause of a failed connection in plain words."""
    chain = _exception_chain(exc)
    if any(isinstance(e, (urllib3.exceptions.NameResolutionError, socket.gaierror)) for e in chain):
        return "the host name could not be resolved (no network connection or a DNS failure)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused (no server is listening at that address)"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "the connection was reset"
    ssl_error = next((e for e in chain if isinstance(e, requests.exceptions.SSLError)), None)
    if ssl_error is not None:
        return f"TLS/SSL error ({ssl_error})"
    # urllib3 derives NewConnectionError from its timeout error class, so a refused or
    # failed connection must be recognised before any timeout.
    if any(
        isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))
        and not isinstance(e, urllib3.exceptions.NewConnectionError)
        for e in chain
    ):
        return "the connection timed out"
    if any(isinstance(e, (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead)) for e in chain):
        return "the connection was closed before the transfer finished"
    return str(exc)


def _connection_error(url: str, exc: BaseException) -> DownloadError:
    parts = urlsplit(url)
    return DownloadError(
        f"Cannot reach {parts.scheme}://{parts.netloc}: {_describe_connection_error(exc)}. "
        f"Check the network connection; to use another API address, set {API_URL_ENV} or --api-url."
    )


def _http_error(response: requests.Response, url: str) -> DownloadError:
    """Describe an HTTP error status; ``url`` is the requested URL, before any redirect."""
    status = response.status_code
    if status == 404:
        hint = "the article or file is not at this address; check that the dataset is still published"
    elif status in RETRY_STATUSES:
        hint = "the server failed or is busy; try again later"
    else:
        hint = "the server rejected the request"
    status_text = f"HTTP {status} {response.reason}" if response.reason else f"HTTP {status}"
    final_url = response.url or url
    redirected = f" (redirected from {url})" if final_url != url else ""
    return DownloadError(f"{status_text} from {final_url}{redirected}: {hint}.")


def _sleep_before_retry(attempt: int, backoff: float) -> None:
    if backoff > 0:
        time.sleep(backoff * 2 ** (attempt - 1))


def fetch_remote_file(
    source: DatasetSource,
    *,
    api_url: str | None = None,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 2.0,
) -> RemoteFile:
    """Read the article's file list and return the dataset's archive entry.

    Raises:
        DownloadError: No connection, an HTTP error, an invalid response, or the archive
            is missing from the list.
    """
    session = session or _new_session()
    url = f"{resolve_api_url(api_url)}/articles/{source.article_id}"
    payload = _get_json(session, url, timeout=timeout, retries=retries, backoff=backoff)

    files = payload.get("files") if isinstance(payload, dict) else None
    if not isinstance(files, list):
        raise DownloadError(f"Invalid response from {url}: it has no 'files' list; check the API URL.")
    listed = [item for item in files if isinstance(item, dict)]
    match = next((item for item in listed if item.get("name") == source.archive_name), None)
    if match is None:
        names = ", ".join(str(item.get("name")) for item in listed) or "no files"
        raise DownloadError(
            f"figshare article {source.article_id} ({source.title}) no longer lists "
            f"{source.archive_name}; it lists: {names}. The dataset may have been updated: "
            f"check {source.article_page} and report it to the GastricVision maintainers."
        )
    return _remote_file_from(match, url)


def _get_json(session: requests.Session, url: str, *, timeout: float, retries: int, backoff: float):
    for attempt in range(retries + 1):
        try:
            response = session.get(url, timeout=timeout, stream=True, headers={"Accept": "application/json"})
        except requests.ConnectionError as exc:
            # Refused connections and failed DNS lookups are not retried: the network
            # or the address is wrong, and waiting does not fix either.
            raise _connection_error(url, exc) from None
        except requests.RequestException as exc:
            raise DownloadError(f"Request to {url} failed: {exc}.") from None

        with response:
            if response.status_code in RETRY_STATUSES and attempt < retries:
                logger.warning("HTTP %d from %s; retry %d of %d", response.status_code, url, attempt + 1, retries)
                _sleep_before_retry(attempt + 1, backoff)
                continue
            if response.status_code >= 400:
                raise _http_error(response, url)
            body = _read_limited(response, url)
        try:
            return json.loads(body)
        except ValueError:
            raise DownloadError(f"Invalid response from {url}: not JSON; check the API URL.") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def _read_limited(response: requests.Response, url: str) -> bytes:
    body = bytearray()
    try:
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_METADATA_BYTES:
                raise DownloadError(
                    f"Invalid response from {url}: larger than {format_size(MAX_METADATA_BYTES)}; "
                    "check the API URL."
                )
    except requests.RequestException as exc:
        raise DownloadError(f"Reading the response from {url} failed: {_describe_connection_error(exc)}.") from None
    return bytes(body)


def _remote_file_from(item: dict, api_url: str) -> RemoteFile:
    name = item.get("name")
    size = item.get("size")
    url = item.get("download_url")
    if not isinstance(size, int) or size <= 0:
        raise DownloadError(f"Invalid response from {api_url}: {name} has no valid size ({size!r}).")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"Invalid response from {api_url}: {name} has no http(s) download URL ({url!r}).")

    md5 = None
    for key in ("computed_md5", "supplied_md5"):
        value = item.get(key)
        if isinstance(value, str) and _MD5_PATTERN.match(value.strip().lower()):
            md5 = value.strip().lower()
            break
    if md5 is None:
        logger.warning("%s lists no MD5 for %s; only its size can be checked", api_url, name)
    return RemoteFile(name=name, size=size, md5=md5, url=url)


# --------------------------------------------------------------------------- transfer


class _Interrupted(Exception):
    """A transfer that stopped early and may be resumed."""


class _PartFile:
    """The ``.part`` file of a download and its state file.

    The state file stores the remote size and MD5 the part belongs to, so that a part of
    an older version of the file is not resumed, and the number of MD5 mismatches seen.
    """

    def __init__(self, target: Path, remote: RemoteFile):
        self.target = target
        self.remote = remote
        self.path = target.with_name(target.name + ".part")
        self.state_path = target.with_name(target.name + ".part.json")

    def load_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def save_state(self, **changes) -> None:
        state = self.load_state()
        state.update(size=self.remote.size, md5=self.remote.md5, url=self.remote.url, **changes)
        self.state_path.write_text(json.dumps(state, indent=2))

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def discard_if_stale(self) -> None:
        if not self.path.exists():
            self.state_path.unlink(missing_ok=True)
            return
        state = self.load_state()
        stale_version = state and (state.get("size"), state.get("md5")) != (self.remote.size, self.remote.md5)
        too_long = self.size() > self.remote.size
        if stale_version or too_long:
            logger.warning("Discarding %s: it belongs to another version of %s", self.path, self.remote.name)
            self.remove()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)


def _md5_of_file(path: Path):
    hasher = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_SIZE):
            hasher.update(block)
    return hasher


def _check_free_space(folder: Path, remote: RemoteFile, already: int) -> None:
    needed = remote.size - already
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"Not enough space in {folder} to download {remote.name}: it needs "
            f"{format_size(needed)} more ({format_size(remote.size)} in total, "
            f"{format_size(already)} already downloaded) and about {format_size(remote.size)} "
            f"more to extract, but only {format_size(free)} is free. Free space or choose "
            "another --dest."
        )
    if needed + remote.size > free:
        logger.warning(
            "%s: %s free; the download fits, but extracting needs about %s more",
            folder,
            format_size(free),
            format_size(needed + remote.size - free),
        )


def _disk_full_error(part: _PartFile, written: int) -> DownloadError:
    remaining = part.remote.size - written
    return DownloadError(
        f"No space left in {part.path.parent} while downloading {part.remote.name}: "
        f"{format_size(written)} of {format_size(part.remote.size)} are saved in {part.path}. "
        f"Free at least {format_size(remaining)} for the rest, plus about "
        f"{format_size(part.remote.size)} to extract, then run the command again to resume."
    )


@dataclass
class _TransferState:
    """Bytes saved in the part file so far, their MD5, and bytes received in this run.

    Each chunk is hashed right after it is written, so ``hasher`` always covers exactly
    the first ``offset`` bytes of the part file, also after an interruption.
    """

    offset: int
    hasher: object
    transferred: int = 0


def _write_all(handle, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = handle.write(view)
        view = view[written:]


def _transfer(
    session: requests.Session,
    part: _PartFile,
    state: _TransferState,
    *,
    timeout: float,
    on_bytes: Callable[[int], None],
) -> None:
    """Run one HTTP request that appends to the part file from ``state.offset``.

    Raises:
        _Interrupted: The connection failed or dropped, or the server returned a status
            worth retrying.
        DownloadError: Any other HTTP error, more data than the file list declares, or
            a full disk.
    """
    remote = part.remote
    headers = {"Accept-Encoding": "identity"}
    if state.offset:
        headers["Range"] = f"bytes={state.offset}-"
    try:
        response = session.get(remote.url, headers=headers, stream=True, timeout=timeout)
    except requests.ConnectionError as exc:
        raise _Interrupted(_describe_connection_error(exc)) from None
    except requests.Timeout:
        raise _Interrupted("the connection timed out") from None

    with response:
        mode = _check_transfer_response(response, part, state)
        try:
            # Unbuffered, so that a full disk shows up in write() and not later in close().
            handle = open(part.path, mode, buffering=0)
        except OSError as exc:
            raise DownloadError(f"Cannot write {part.path}: {exc.strerror or exc}.") from None
        with handle:
            try:
                for chunk in response.raw.stream(CHUNK_SIZE, decode_content=False):
                    _append_chunk(handle, chunk, part, state)
                    on_bytes(len(chunk))
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                raise _Interrupted(_describe_connection_error(exc)) from None


def _check_transfer_response(response: requests.Response, part: _PartFile, state: _TransferState) -> str:
    """Check the status of a download response; return the mode to open the part file with."""
    remote = part.remote
    status = response.status_code
    if status in RETRY_STATUSES:
        raise _Interrupted(str(_http_error(response, remote.url)))
    if status == 416 and state.offset:
        raise DownloadError(
            f"The server rejected resuming {remote.name} at byte {state.offset:,} (HTTP 416 "
            f"from {remote.url}): the remote file is shorter than the file list says. Delete "
            f"{part.path} and run the command again."
        )
    if status >= 400:
        raise _http_error(response, remote.url)

    if state.offset and status == 200:
        logger.warning("%s ignored the Range request; downloading %s from the start", remote.url, remote.name)
        state.offset = 0
        state.hasher = hashlib.md5()
        return "wb"
    if status == 206:
        start = _content_range_start(response.headers.get("Content-Range"))
        if start != state.offset:
            raise DownloadError(
                f"The server responded to a request for {remote.name} from byte {state.offset:,} "
                f"with data from byte {start}; delete {part.path} and run the command again."
            )
    return "ab" if state.offset else "wb"


def _append_chunk(handle, chunk: bytes, part: _PartFile, state: _TransferState) -> None:
    remote = part.remote
    if state.offset + len(chunk) > remote.size:
        raise DownloadError(
            f"{remote.url} sent more than the {remote.size:,} bytes the file list declares for "
            f"{remote.name}; the remote file may have changed. Delete {part.path} and run the "
            "command again."
        )
    try:
        _write_all(handle, chunk)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full_error(part, part.size()) from None
        raise DownloadError(f"Cannot write {part.path}: {exc.strerror or exc}.") from None
    state.hasher.update(chunk)
    state.offset += len(chunk)
    state.transferred += len(chunk)


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", header or "")
    return int(match.group(1)) if match else None


def _download_to_part(
    session: requests.Session,
    part: _PartFile,
    *,
    progress: bool,
    retries: int,
    backoff: float,
    timeout: float,
) -> _TransferState:
    """Complete the part file; return its final state with the MD5 of all its bytes."""
    from tqdm import tqdm

    remote = part.remote
    offset = part.size()
    state = _TransferState(offset, _md5_of_file(part.path) if offset else hashlib.md5())
    if not part.state_path.exists():
        part.save_state(md5_failures=0)
    failures = 0

    with tqdm(
        total=remote.size,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=remote.name,
        disable=None if progress else True,
    ) as bar:
        while state.offset < remote.size:
            before = state.offset
            try:
                _transfer(session, part, state, timeout=timeout, on_bytes=bar.update)
                problem = f"the server ended the transfer at byte {state.offset:,}"
            except _Interrupted as exc:
                problem = str(exc)
            if state.offset >= remote.size:
                break

            failures = 0 if state.offset > before else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"Downloading {remote.name} from {remote.url} failed {failures} times in a "
                    f"row ({problem}); {format_size(state.offset)} of {format_size(remote.size)} "
                    f"are saved in {part.path}. Run the command again to resume."
                )
            logger.warning(
                "Download of %s interrupted at %s of %s (%s); resuming from byte %d",
                remote.name,
                format_size(state.offset),
                format_size(remote.size),
                problem,
                state.offset,
            )
            _sleep_before_retry(max(failures, 1), backoff)
    return state


def _download_archive(
    session: requests.Session,
    remote: RemoteFile,
    target: Path,
    *,
    progress: bool,
    retries: int,
    backoff: float,
    timeout: float,
) -> tuple[int, int]:
    """Download ``remote`` to ``target`` and check its MD5.

    Returns:
        Bytes transferred in this run and the size of the part file found at the start.
    """
    part = _PartFile(target, remote)
    part.discard_if_stale()
    resumed_from = part.size()
    if resumed_from:
        logger.info("Resuming %s from %s", remote.name, format_size(resumed_from))
    _check_free_space(target.parent, remote, resumed_from)

    state = _download_to_part(session, part, progress=progress, retries=retries, backoff=backoff, timeout=timeout)
    digest = state.hasher.hexdigest()
    if remote.md5 is not None and digest != remote.md5:
        _handle_md5_mismatch(part, digest)
    os.replace(part.path, target)
    part.state_path.unlink(missing_ok=True)
    logger.info("Downloaded %s (%s), MD5 %s", target, format_size(remote.size), digest)
    return state.transferred, resumed_from


def _handle_md5_mismatch(part: _PartFile, digest: str) -> None:
    failures = int(part.load_state().get("md5_failures", 0)) + 1
    remote = part.remote
    if failures >= 2:
        part.remove()
        raise DownloadError(
            f"{remote.name}: MD5 mismatch again (expected {remote.md5}, got {digest}); deleted "
            f"{part.path}. Run the command again to download the file from the start."
        )
    part.save_state(md5_failures=failures)
    raise DownloadError(
        f"{remote.name}: MD5 mismatch (expected {remote.md5}, got {digest}); the download is "
        f"corrupt. It is kept as {part.path}: run the command again to check it once more. A "
        "second mismatch deletes it, and the run after that downloads the file from the start."
    )


# --------------------------------------------------------------------------- extraction


def _marker_path(dest: Path, source: DatasetSource) -> Path:
    return dest / f".gastricvision-{source.key}.json"


def _read_marker(dest: Path, source: DatasetSource) -> dict | None:
    try:
        marker = json.loads(_marker_path(dest, source).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _already_extracted(dest: Path, source: DatasetSource, remote: RemoteFile) -> Path | None:
    """Return the dataset root when an earlier run extracted this version of the archive."""
    marker = _read_marker(dest, source)
    if not marker or (marker.get("md5"), marker.get("size")) != (remote.md5, remote.size):
        return None
    root = dest / str(marker.get("root", "."))
    return root if root.is_dir() else None


def _write_marker(dest: Path, source: DatasetSource, remote: RemoteFile, root: Path, report: ExtractReport) -> None:
    marker = {
        "dataset": source.key,
        "archive": source.archive_name,
        "md5": remote.md5,
        "size": remote.size,
        "root": root.relative_to(dest).as_posix() if root != dest else ".",
        "files": len(report.files),
        "skipped_count": len(report.skipped),
        "skipped": [member.to_dict() for member in report.skipped[:MAX_MARKER_SKIPPED]],
    }
    _marker_path(dest, source).write_text(json.dumps(marker, indent=2))


def _dataset_root(report: ExtractReport) -> Path:
    """Return the one top-level folder of the extracted files, else the destination."""
    tops = {path.relative_to(report.dest).parts[0] for path in report.files}
    if len(tops) == 1:
        only = report.dest / tops.pop()
        if only.is_dir():
            return only
    return report.dest


def _extract_download(source: DatasetSource, archive: Path, dest: Path, progress: bool) -> ExtractReport:
    from tqdm import tqdm

    def show_progress(members: Iterable) -> Iterable:
        return tqdm(members, desc=f"extracting {archive.name}", unit="file", disable=None if progress else True)

    return extract_archive(
        archive,
        dest,
        max_total_bytes=max(archive.stat().st_size * EXTRACT_SIZE_FACTOR, 1),
        max_members=source.max_members,
        progress=show_progress,
    )


# --------------------------------------------------------------------------- entry points


def download_dataset(
    dataset: str,
    dest: str | os.PathLike,
    *,
    api_url: str | None = None,
    session: requests.Session | None = None,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    remove_archive: bool = False,
) -> DownloadResult:
    """Download, check and extract a dataset into ``dest``.

    Args:
        dataset: A key of :data:`DATASET_SOURCES` (``gashissdb`` or ``gchtid``).
        dest: Destination folder; created when missing. The archive and its ``.part``
            file are kept there.
        api_url: figshare API base URL (see :func:`resolve_api_url`).
        session: HTTP session to use, e.g. with a proxy configured.
        progress: Show progress bars on stderr when it is a terminal.
        retries: Failed attempts in a row before a download stops; after each, the
            transfer resumes from the bytes already saved.
        backoff: Seconds before the first retry, doubled for each further one.
        timeout: Seconds to wait for a connection or for the next bytes.
        remove_archive: Delete the archive after a successful extraction.

    Raises:
        DownloadError: No network, HTTP error, changed file list, MD5 mismatch or full disk.
        ArchiveError: The archive is corrupt or breaks the extraction limits.
    """
    source = DATASET_SOURCES.get(dataset)
    if source is None:
        raise DownloadError(f"Unknown dataset {dataset!r}; choose one of: {', '.join(DATASET_SOURCES)}.")
    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create the destination folder {dest}: {exc.strerror or exc}.") from None
    dest = dest.resolve()

    session = session or _new_session()
    remote = fetch_remote_file(
        source, api_url=api_url, session=session, timeout=timeout, retries=retries, backoff=backoff
    )
    root = _already_extracted(dest, source, remote)
    if root is not None:
        logger.info(
            "%s was already downloaded and extracted into %s; delete %s to extract it again",
            remote.name,
            root,
            _marker_path(dest, source),
        )
        archive = dest / source.archive_name
        return DownloadResult(source, dest, root, archive if archive.exists() else None, remote.md5)

    archive = dest / source.archive_name
    transferred, resumed_from = 0, 0
    if archive.exists() and not _archive_is_current(archive, remote):
        logger.warning("%s does not match the current file list; downloading it again", archive)
        archive.unlink()
    if not archive.exists():
        transferred, resumed_from = _download_archive(
            session, remote, archive, progress=progress, retries=retries, backoff=backoff, timeout=timeout
        )

    report = _extract_download(source, archive, dest, progress)
    root = _dataset_root(report)
    _write_marker(dest, source, remote, root, report)
    if remove_archive:
        archive.unlink()
    return DownloadResult(
        source=source,
        dest=dest,
        root=root,
        archive=None if remove_archive else archive,
        md5=remote.md5,
        downloaded_bytes=transferred,
        resumed_from=resumed_from,
        extract_report=report,
    )


def _archive_is_current(archive: Path, remote: RemoteFile) -> bool:
    if archive.stat().st_size != remote.size:
        return False
    return remote.md5 is None or _md5_of_file(archive).hexdigest() == remote.md5


def verify_download(
    dataset: str,
    root: str | os.PathLike,
    *,
    check_files: bool = False,
    progress=None,
) -> DownloadVerification:
    """Verify every published sub-database of an extracted download.

    GasHisSDB has three sub-databases (160, 120 and 80 px) and gets one report for each;
    GCHTID gets one report.

    Args:
        dataset: A key of :data:`DATASET_SOURCES`.
        root: Extracted dataset folder (:attr:`DownloadResult.root`).
        check_files: Also decode and hash every file (slow).
        progress: Optional callable taking an iterable and returning it (e.g. ``tqdm``).
    """
    source = DATASET_SOURCES[dataset]
    verification = DownloadVerification()
    sizes = source.published_sizes if source.layout == "gashissdb" else [None]
    declared = size_folder_tile_size(root) if source.layout == "gashissdb" else None
    for size in sizes:
        if size is not None and declared is not None and size != declared:
            # The root is itself one size folder, so the other sub-databases are missing.
            verification.problems.append(
                f"{root}: no {size} px sub-database here; the folder contains only the {declared} px tiles."
            )
            continue
        try:
            report = verify_dataset(root, size=size, check_files=check_files, progress=progress)
        except DatasetError as exc:
            verification.problems.append(str(exc))
            continue
        if size is not None and report.tile_size != size:
            # verify_dataset reads a root that is itself one size folder as that size,
            # whatever size is requested.
            verification.problems.append(
                f"{root}: no {size} px sub-database here; the folder contains {report.tile_size} px tiles."
            )
            continue
        verification.reports.append(report)
        if report.layout != source.layout:
            verification.problems.append(
                f"{root}: detected the {report.layout} layout, but {source.title} should have "
                f"the {source.layout} layout; the archive does not contain the expected dataset."
            )
    return verification
