"""Dataset downloads against a loopback server that imitates the figshare API.

The server lists each article's files with their size and MD5. Like figshare's download
host, it redirects download URLs to the file content and honours Range requests. On
request it drops a connection, serves corrupt bytes or fails with an HTTP status.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import urllib3

from gastricvision import datasets
from gastricvision.cli import EXIT_BAD_INPUT, EXIT_OK, main
from gastricvision.cli.data import DOWNLOADABLE_DATASETS
from gastricvision.download import (
    API_URL_ENV,
    DATASET_SOURCES,
    _describe_connection_error,
    download_dataset,
    resolve_api_url,
    verify_download,
)
from gastricvision.errors import ArchiveError, DownloadError
from tests.test_archives import build_rar4, build_zip, gashissdb_members, gchtid_members, rar_tiles

GASHISSDB = DATASET_SOURCES["gashissdb"]
GCHTID = DATASET_SOURCES["gchtid"]


# --------------------------------------------------------------------------- server


@dataclass
class ServedFile:
    name: str
    data: bytes
    listed_md5: str | None = None  # MD5 the API lists; defaults to the MD5 of data
    drop_after: int | None = None  # first request: send this many bytes, then close
    honour_range: bool = True
    status: int | None = None  # respond to every download request with this status


@dataclass
class FigshareImitation:
    """State of the loopback server: articles, files, and a log of requests."""

    base_url: str = ""
    articles: dict[int, list[ServedFile]] = field(default_factory=dict)
    article_status: int | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v2"

    def publish(self, article_id: int, *files: ServedFile) -> None:
        self.articles[article_id] = list(files)

    def file(self, name: str) -> ServedFile:
        return next(f for files in self.articles.values() for f in files if f.name == name)

    def download_requests(self, name: str) -> list[str | None]:
        """Range headers of the requests for a file's content, in order."""
        return [header for path, header in self.requests if path == f"/content/{name}"]


class _Handler(BaseHTTPRequestHandler):
    state: FigshareImitation

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.state.requests.append((self.path, self.headers.get("Range")))
        if match := re.fullmatch(r"/v2/articles/(\d+)", self.path):
            self._article(int(match.group(1)))
        elif match := re.fullmatch(r"/ndownloader/files/(.+)", self.path):
            self.send_response(302)
            self.send_header("Location", f"{self.state.base_url}/content/{match.group(1)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif match := re.fullmatch(r"/content/(.+)", self.path):
            self._content(self.state.file(match.group(1)))
        else:
            self.send_error(404)

    def _article(self, article_id: int) -> None:
        if self.state.article_status:
            self.send_error(self.state.article_status)
            return
        if article_id not in self.state.articles:
            self.send_error(404, "Article not found")
            return
        files = [
            {
                "id": index,
                "name": served.name,
                "size": len(served.data),
                "computed_md5": served.listed_md5 or hashlib.md5(served.data).hexdigest(),
                "supplied_md5": "",
                "download_url": f"{self.state.base_url}/ndownloader/files/{served.name}",
                "is_link_only": False,
            }
            for index, served in enumerate(self.state.articles[article_id])
        ]
        body = json.dumps({"id": article_id, "title": "imitation", "files": files}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _content(self, served: ServedFile) -> None:
        if served.status:
            self.send_error(served.status)
            return
        data = served.data
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and served.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()

        if served.drop_after is not None:
            # Announce the whole length, send part of it, then drop the connection.
            self.wfile.write(data[start : start + served.drop_after])
            self.wfile.flush()
            served.drop_after = None
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@pytest.fixture
def figshare():
    state = FigshareImitation()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def download(figshare: FigshareImitation, dataset: str, dest: Path, **options):
    options = {"api_url": figshare.api_url, "progress": False, "backoff": 0, "timeout": 10, **options}
    return download_dataset(dataset, dest, **options)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gchtid_zip() -> bytes:
    return build_zip(gchtid_members())


@pytest.fixture
def gashissdb_rar() -> bytes:
    return build_rar4(rar_tiles(gashissdb_members()))


# --------------------------------------------------------------------------- success


def test_gchtid_zip_downloaded_and_extracted(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile("README.txt", b"about"), ServedFile(GCHTID.archive_name, gchtid_zip))
    result = download(figshare, "gchtid", tmp_path / "data")

    dest = (tmp_path / "data").resolve()
    assert result.root == dest / "HMU-GC-HE-30K"
    assert result.downloaded_bytes == len(gchtid_zip)
    assert result.archive == dest / GCHTID.archive_name
    assert result.archive.read_bytes() == gchtid_zip
    assert len(result.extract_report.files) == 16
    assert (result.root / "all_image" / "TUM" / "TUM_2.png").is_file()
    assert not (dest / f"{GCHTID.archive_name}.part").exists()


def test_gchtid_verify_reports_counts(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    result = download(figshare, "gchtid", tmp_path)
    verification = verify_download("gchtid", result.root, check_files=True)

    assert verification.problems == []
    assert len(verification.reports) == 1
    report = verification.reports[0]
    assert report.layout == "gchtid"
    assert report.counts == {name: 2 for name in datasets.TISSUE_CLASSES}
    assert report.unreadable == []
    assert not verification.complete  # 2 tiles per class, not the published 3,887


def test_gashissdb_rar_downloaded_and_verified(figshare, gashissdb_rar, tmp_path):
    figshare.publish(GASHISSDB.article_id, ServedFile(GASHISSDB.archive_name, gashissdb_rar))
    result = download(figshare, "gashissdb", tmp_path / "data")
    verification = verify_download("gashissdb", result.root)

    assert result.extract_report.format == "rar"
    assert result.root == (tmp_path / "data").resolve()
    assert [report.tile_size for report in verification.reports] == [160, 120, 80]
    assert all(report.counts == {"Abnormal": 2, "Normal": 2} for report in verification.reports)
    assert verification.problems == []


def test_missing_sub_database_is_a_problem(figshare, tmp_path):
    archive = build_rar4(rar_tiles(gashissdb_members(sizes=(160,))))
    figshare.publish(GASHISSDB.article_id, ServedFile(GASHISSDB.archive_name, archive))
    result = download(figshare, "gashissdb", tmp_path)
    verification = verify_download("gashissdb", result.root)

    assert [report.tile_size for report in verification.reports] == [160]
    assert len(verification.problems) == 2
    assert "no 120 px sub-database" in verification.problems[0]


def test_wrong_layout_is_a_problem(figshare, tmp_path):
    archive = build_zip({"photos/cats/a.png": gchtid_members()["HMU-GC-HE-30K/all_image/ADI/ADI_1.png"]})
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, archive))
    result = download(figshare, "gchtid", tmp_path)
    verification = verify_download("gchtid", result.root)

    assert not verification.complete
    assert "class-folders layout" in verification.problems[0]


def test_second_run_skips_download(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    download(figshare, "gchtid", tmp_path)
    second = download(figshare, "gchtid", tmp_path)

    assert second.extract_report is None
    assert second.downloaded_bytes == 0
    assert second.root == tmp_path.resolve() / "HMU-GC-HE-30K"
    assert len(figshare.download_requests(GCHTID.archive_name)) == 1


def test_remove_archive_after_extraction(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    result = download(figshare, "gchtid", tmp_path, remove_archive=True)

    assert result.archive is None
    assert not (tmp_path / GCHTID.archive_name).exists()
    assert (result.root / "all_image" / "ADI" / "ADI_1.png").is_file()


def test_api_url_from_environment(monkeypatch):
    monkeypatch.setenv(API_URL_ENV, "http://127.0.0.1:9/v2/")
    assert resolve_api_url() == "http://127.0.0.1:9/v2"
    assert resolve_api_url("http://127.0.0.1:8/api") == "http://127.0.0.1:8/api"


def test_invalid_api_url_rejected():
    with pytest.raises(DownloadError) as caught:
        resolve_api_url("ftp://example.invalid/v2")

    assert "http://" in str(caught.value)


# --------------------------------------------------------------------------- resume


def test_dropped_connection_resumes_with_range(figshare, gchtid_zip, tmp_path):
    half = len(gchtid_zip) // 2
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip, drop_after=half))
    result = download(figshare, "gchtid", tmp_path)

    assert figshare.download_requests(GCHTID.archive_name) == [None, f"bytes={half}-"]
    assert result.downloaded_bytes == len(gchtid_zip)
    assert (tmp_path / GCHTID.archive_name).read_bytes() == gchtid_zip


def test_part_file_from_earlier_run_resumed(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    third = len(gchtid_zip) // 3
    (tmp_path / f"{GCHTID.archive_name}.part").write_bytes(gchtid_zip[:third])
    result = download(figshare, "gchtid", tmp_path)

    assert figshare.download_requests(GCHTID.archive_name) == [f"bytes={third}-"]
    assert result.resumed_from == third
    assert result.downloaded_bytes == len(gchtid_zip) - third
    assert (tmp_path / GCHTID.archive_name).read_bytes() == gchtid_zip


def test_server_ignoring_range_restarts(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip, honour_range=False))
    (tmp_path / f"{GCHTID.archive_name}.part").write_bytes(gchtid_zip[:100])
    result = download(figshare, "gchtid", tmp_path)

    assert result.downloaded_bytes == len(gchtid_zip)
    assert (tmp_path / GCHTID.archive_name).read_bytes() == gchtid_zip


def test_part_of_other_version_discarded(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    part = tmp_path / f"{GCHTID.archive_name}.part"
    part.write_bytes(b"old version bytes")
    (tmp_path / f"{GCHTID.archive_name}.part.json").write_text(json.dumps({"size": 17, "md5": "0" * 32}))
    download(figshare, "gchtid", tmp_path)

    assert figshare.download_requests(GCHTID.archive_name) == [None]
    assert (tmp_path / GCHTID.archive_name).read_bytes() == gchtid_zip


def test_repeated_503_gives_up(figshare, gchtid_zip, tmp_path):
    served = ServedFile(GCHTID.archive_name, gchtid_zip, status=503)
    figshare.publish(GCHTID.article_id, served)
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path, retries=2)

    message = str(caught.value)
    assert "503" in message
    assert "Run the command again to resume" in message
    assert len(figshare.download_requests(GCHTID.archive_name)) == 3


# --------------------------------------------------------------------------- MD5


def test_md5_mismatch_keeps_part_then_deletes(figshare, gchtid_zip, tmp_path):
    corrupt = bytearray(gchtid_zip)
    corrupt[len(corrupt) // 2] ^= 0xFF
    served = ServedFile(GCHTID.archive_name, bytes(corrupt), listed_md5=hashlib.md5(gchtid_zip).hexdigest())
    figshare.publish(GCHTID.article_id, served)
    part = tmp_path / f"{GCHTID.archive_name}.part"

    with pytest.raises(DownloadError) as first:
        download(figshare, "gchtid", tmp_path)
    assert "MD5 mismatch" in str(first.value)
    assert part.read_bytes() == bytes(corrupt)
    assert not (tmp_path / GCHTID.archive_name).exists()

    with pytest.raises(DownloadError) as second:
        download(figshare, "gchtid", tmp_path)
    assert "MD5 mismatch again" in str(second.value)
    assert not part.exists()

    served.data = gchtid_zip
    result = download(figshare, "gchtid", tmp_path)
    assert result.downloaded_bytes == len(gchtid_zip)
    assert not list(tmp_path.glob("*.part*"))


def test_existing_archive_with_wrong_md5_downloaded_again(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    (tmp_path / GCHTID.archive_name).write_bytes(b"x" * len(gchtid_zip))
    result = download(figshare, "gchtid", tmp_path)

    assert result.downloaded_bytes == len(gchtid_zip)
    assert (tmp_path / GCHTID.archive_name).read_bytes() == gchtid_zip


# --------------------------------------------------------------------------- errors


def test_article_404_names_status_and_url(figshare, tmp_path):
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path)

    message = str(caught.value)
    assert "HTTP 404" in message
    assert f"{figshare.api_url}/articles/{GCHTID.article_id}" in message


def test_article_500_retried_then_reported(figshare, tmp_path):
    figshare.article_status = 500
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path, retries=2)

    assert "HTTP 500" in str(caught.value)
    assert f"/articles/{GCHTID.article_id}" in str(caught.value)
    assert len(figshare.requests) == 3


def test_download_404_names_url(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip, status=404))
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path)

    message = str(caught.value)
    assert "HTTP 404" in message
    assert f"/content/{GCHTID.archive_name}" in message
    assert len(figshare.download_requests(GCHTID.archive_name)) == 1


def test_download_500_after_retries(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip, status=500))
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path, retries=3)

    assert "HTTP 500" in str(caught.value)
    assert f"/content/{GCHTID.archive_name}" in str(caught.value)
    assert len(figshare.download_requests(GCHTID.archive_name)) == 4


def test_connection_refused_reported(tmp_path):
    api_url = f"http://127.0.0.1:{closed_port()}/v2"
    with pytest.raises(DownloadError) as caught:
        download_dataset("gchtid", tmp_path, api_url=api_url, progress=False, backoff=0, timeout=5)

    message = str(caught.value)
    assert "connection refused" in message
    assert "127.0.0.1" in message
    assert API_URL_ENV in message


def test_dns_failure_described():
    reason = urllib3.exceptions.NameResolutionError("api.figshare.com", None, socket.gaierror(-3, "failure"))
    error = requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v2/articles/1", reason))

    assert "host name could not be resolved" in _describe_connection_error(error)


def test_changed_file_list_reported(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile("HMU-GC-HE-30K-v2.zip", gchtid_zip), ServedFile("README.md", b"x"))
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path)

    message = str(caught.value)
    assert GCHTID.archive_name in message
    assert "HMU-GC-HE-30K-v2.zip, README.md" in message
    assert str(GCHTID.article_id) in message


def test_full_disk_before_download(figshare, gchtid_zip, tmp_path, monkeypatch):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))

    def small_disk(path):
        return shutil._ntuple_diskusage(total=1000, used=900, free=100)

    monkeypatch.setattr(shutil, "disk_usage", small_disk)
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path)

    message = str(caught.value)
    assert "Not enough space" in message
    assert f"{len(gchtid_zip) / 1024:.1f} KiB" in message
    assert "100 bytes is free" in message
    assert figshare.download_requests(GCHTID.archive_name) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, which fails every write with ENOSPC")
def test_full_disk_while_writing(figshare, gchtid_zip, tmp_path):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    # A part file that is a link to /dev/full makes every write fail with ENOSPC.
    (tmp_path / f"{GCHTID.archive_name}.part").symlink_to("/dev/full")
    with pytest.raises(DownloadError) as caught:
        download(figshare, "gchtid", tmp_path)

    message = str(caught.value)
    assert "No space left" in message
    assert f"Free at least {len(gchtid_zip) / 1024:.1f} KiB" in message
    assert "run the command again to resume" in message


# --------------------------------------------------------------------------- hostile archives


def test_hostile_members_skipped_in_download(figshare, tmp_path):
    members = gchtid_members(per_class=1)
    members["../../escaped.png"] = b"x"
    members["/etc/cron.d/evil"] = b"x"
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, build_zip(members)))
    result = download(figshare, "gchtid", tmp_path / "data")

    codes = {member.name: member.code for member in result.extract_report.skipped}
    assert codes == {"../../escaped.png": "path_traversal", "/etc/cron.d/evil": "absolute_path"}
    assert not (tmp_path / "escaped.png").exists()
    assert result.root == (tmp_path / "data").resolve() / "HMU-GC-HE-30K"


def test_zip_bomb_in_download_rejected(figshare, tmp_path):
    members = gchtid_members(per_class=1)
    members["HMU-GC-HE-30K/all_image/ADI/zeros.png"] = bytes(30 * 1024 * 1024)
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, build_zip(members)))
    dest = tmp_path / "data"
    with pytest.raises(ArchiveError) as caught:
        download(figshare, "gchtid", dest)

    assert GCHTID.archive_name in str(caught.value)
    assert sorted(path.name for path in dest.iterdir()) == [GCHTID.archive_name]


# --------------------------------------------------------------------------- command line


def test_cli_choices_match_sources():
    assert set(DOWNLOADABLE_DATASETS) == set(DATASET_SOURCES)


def test_cli_download_prints_verify_report(figshare, gchtid_zip, tmp_path, capsys, monkeypatch):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    monkeypatch.setitem(datasets.PUBLISHED_COUNTS, ("gchtid", 224), {name: 2 for name in datasets.TISSUE_CLASSES})
    status = main(["data", "download", "gchtid", "--dest", str(tmp_path), "--api-url", figshare.api_url])

    out = capsys.readouterr().out
    assert status == EXIT_OK
    assert "MD5 checked" in out
    assert "extracted 16 files" in out
    assert "gchtid layout, 224 px tiles" in out
    assert "  complete" in out


def test_cli_download_incomplete_exit_status(figshare, gchtid_zip, tmp_path, capsys, monkeypatch):
    figshare.publish(GCHTID.article_id, ServedFile(GCHTID.archive_name, gchtid_zip))
    monkeypatch.setenv(API_URL_ENV, figshare.api_url)
    status = main(["data", "download", "gchtid", "--dest", str(tmp_path)])

    captured = capsys.readouterr()
    assert status == EXIT_BAD_INPUT
    assert "INCOMPLETE" in captured.out
    assert "does not match the published" in captured.err


def test_cli_download_error_message(tmp_path, capsys):
    api_url = f"http://127.0.0.1:{closed_port()}/v2"
    status = main(["data", "download", "gashissdb", "--dest", str(tmp_path), "--api-url", api_url])

    assert status == EXIT_BAD_INPUT
    assert "error: Cannot reach" in capsys.readouterr().err
