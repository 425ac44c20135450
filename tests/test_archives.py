"""Safe extraction of zip and RAR archives built by the tests.

RAR archives are assembled byte by byte as RAR 4 files with stored (uncompressed)
members, because no RAR writer exists here and libarchive only reads RAR. Compression
bombs are therefore tested with zip archives; RAR archives get the size, member-count,
path and link checks.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gastricvision.archives import (
    ExtractReport,
    archive_format,
    extract_archive,
)
from gastricvision.errors import ArchiveError

# --------------------------------------------------------------------------- builders

RAR_HOST_UNIX = 3
RAR_STORE = 0x30
RAR_DIRECTORY_FLAGS = 0xE0
RAR_LONG_BLOCK = 0x8000


def tile_png(seed: int, size: int = 16) -> bytes:
    """A small synthetic RGB tile encoded as PNG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def gashissdb_members(per_class: int = 2, sizes=(160, 120, 80)) -> dict[str, bytes]:
    """Member names and PNG bytes laid out like GasHisSDB: ``<size>/<Class>/<Class>-NNNNN.png``."""
    members = {}
    seed = 0
    for size in sizes:
        for label in ("Normal", "Abnormal"):
            for index in range(1, per_class + 1):
                members[f"{size}/{label}/{label}-{index:05d}.png"] = tile_png(seed)
                seed += 1
    return members


def gchtid_members(per_class: int = 2) -> dict[str, bytes]:
    """Member names and PNG bytes laid out like GCHTID: ``HMU-GC-HE-30K/all_image/<CLASS>/<CLASS>_N.png``."""
    members = {}
    seed = 1000
    for label in ("ADI", "DEB", "LYM", "MUC", "MUS", "NOR", "STR", "TUM"):
        for index in range(1, per_class + 1):
            members[f"HMU-GC-HE-30K/all_image/{label}/{label}_{index}.png"] = tile_png(seed)
            seed += 1
    return members


def build_zip(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_unix_mode(name: str, data: bytes, mode: int) -> bytes:
    """A zip holding one member whose Unix file type and mode are ``mode``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.png", tile_png(1))
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = mode << 16
        archive.writestr(info, data)
    return buffer.getvalue()


def _rar4_block(head_type: int, flags: int, body: bytes, data: bytes = b"") -> bytes:
    header = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(header) & 0xFFFF) + header + data


def build_rar4(members: list[tuple[str, bytes, int]]) -> bytes:
    """A RAR 4 archive of stored members, each ``(name, data, unix_mode)``.

    A mode with the directory type gives a folder entry, one with the symbolic link type
    a link whose target is ``data``. Header CRCs are the low 16 bits of CRC-32 over the
    header from its type byte on; file CRCs are CRC-32 of the data.
    """
    marker = b"Rar!\x1a\x07\x00"
    main_header = _rar4_block(0x73, 0, b"\x00" * 6)
    blocks = []
    for name, data, mode in members:
        encoded = name.encode()
        flags = RAR_LONG_BLOCK
        if stat.S_ISDIR(mode):
            flags |= RAR_DIRECTORY_FLAGS
        body = struct.pack(
            "<IIBIIBBHI",
            len(data),  # packed size
            len(data),  # unpacked size
            RAR_HOST_UNIX,
            zlib.crc32(data),
            0x5A210000,  # DOS date and time
            20,  # version needed to extract: 2.0
            RAR_STORE,
            len(encoded),
            mode,
        ) + encoded
        blocks.append(_rar4_block(0x74, flags, body, data))
    end = _rar4_block(0x7B, 0x4000, b"")
    return marker + main_header + b"".join(blocks) + end


def rar_tiles(members: dict[str, bytes]) -> list[tuple[str, bytes, int]]:
    return [(name, data, 0o100644) for name, data in members.items()]


def entries_in(folder: Path) -> list[str]:
    """Every path below ``folder``, hidden ones included, relative and sorted."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def skipped_codes(report: ExtractReport) -> dict[str, str]:
    return {member.name: member.code for member in report.skipped}


# --------------------------------------------------------------------------- zip


def test_zip_extracts_gchtid_layout(tmp_path):
    members = gchtid_members()
    report = extract_archive(build_zip(members), tmp_path / "out", name="tiles.zip")

    assert report.format == "zip"
    assert report.archive == "tiles.zip"
    assert report.skipped == []
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in report.files) == sorted(members)
    assert report.total_bytes == sum(len(data) for data in members.values())
    first = "HMU-GC-HE-30K/all_image/ADI/ADI_1.png"
    assert (tmp_path / "out" / first).read_bytes() == members[first]


def test_zip_from_path_matches_bytes(tmp_path):
    archive = tmp_path / "tiles.zip"
    archive.write_bytes(build_zip(gashissdb_members(per_class=1)))
    report = extract_archive(archive, tmp_path / "out")

    assert report.archive == str(archive)
    assert len(report.files) == 6
    assert all(path.is_file() for path in report.files)


def test_zip_slip_member_skipped(tmp_path):
    data = build_zip({"../evil.png": b"x", "a/../../evil2.png": b"x", "..\\evil3.png": b"x", "ok.png": tile_png(0)})
    dest = tmp_path / "sandbox" / "out"
    report = extract_archive(data, dest)

    codes = skipped_codes(report)
    assert codes["../evil.png"] == "path_traversal"
    assert codes["a/../../evil2.png"] == "path_traversal"
    assert codes["..\\evil3.png"] == "path_traversal"
    assert [p.name for p in report.files] == ["ok.png"]
    assert entries_in(tmp_path) == ["sandbox", "sandbox/out", "sandbox/out/ok.png"]


def test_zip_absolute_paths_skipped(tmp_path):
    data = build_zip({"/tmp/abs.png": b"x", "C:\\Windows\\abs.png": b"x", "//server/share.png": b"x", "ok.png": b"y"})
    report = extract_archive(data, tmp_path / "out")

    codes = skipped_codes(report)
    assert codes["/tmp/abs.png"] == "absolute_path"
    assert codes["C:\\Windows\\abs.png"] == "absolute_path"
    assert codes["//server/share.png"] == "absolute_path"
    assert entries_in(tmp_path / "out") == ["ok.png"]


def test_zip_symlink_member_skipped(tmp_path):
    data = zip_with_unix_mode("link.png", b"/etc/passwd", stat.S_IFLNK | 0o777)
    report = extract_archive(data, tmp_path / "out")

    assert skipped_codes(report) == {"link.png": "symlink"}
    assert not (tmp_path / "out" / "link.png").exists()
    assert not (tmp_path / "out" / "link.png").is_symlink()


@pytest.mark.parametrize("file_type", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_zip_special_file_skipped(tmp_path, file_type):
    report = extract_archive(zip_with_unix_mode("dev", b"", file_type | 0o644), tmp_path / "out")

    assert skipped_codes(report) == {"dev": "special_file"}
    assert entries_in(tmp_path / "out") == ["ok.png"]


def test_zip_encrypted_member_skipped(tmp_path):
    data = bytearray(build_zip({"secret.png": b"not really encrypted", "ok.png": b"y"}))
    # zipfile cannot encrypt, so set the "encrypted" bit (bit 0 of the general purpose
    # flags) of the first member in its local header and its central directory entry.
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    report = extract_archive(bytes(data), tmp_path / "out")

    assert skipped_codes(report) == {"secret.png": "encrypted"}
    assert entries_in(tmp_path / "out") == ["ok.png"]


def test_zip_duplicate_name_keeps_first(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("a/tile.png", b"first")
        archive.writestr("a/tile.png", b"second")
        archive.writestr("a//./tile.png", b"third")
    report = extract_archive(buffer.getvalue(), tmp_path / "out")

    assert [member.code for member in report.skipped] == ["duplicate", "duplicate"]
    assert (tmp_path / "out" / "a" / "tile.png").read_bytes() == b"first"


def test_zip_file_folder_conflict_skipped(tmp_path):
    data = build_zip({"a": b"file", "a/b.png": b"inside"})
    report = extract_archive(data, tmp_path / "out")

    assert skipped_codes(report) == {"a/b.png": "conflict"}
    assert (tmp_path / "out" / "a").read_bytes() == b"file"


def test_zip_corrupt_member_skipped(tmp_path):
    data = bytearray(build_zip({"bad.png": b"A" * 1000, "ok.png": b"B" * 10}, compression=zipfile.ZIP_STORED))
    offset = data.index(b"A" * 1000)
    data[offset + 10] = ord("Z")
    report = extract_archive(bytes(data), tmp_path / "out")

    assert skipped_codes(report) == {"bad.png": "corrupt"}
    assert entries_in(tmp_path / "out") == ["ok.png"]
    assert report.total_bytes == 10


def test_nested_archive_kept_unopened(tmp_path):
    inner = build_zip({"inner.png": tile_png(3)})
    report = extract_archive(build_zip({"batch/inner.zip": inner, "batch/a.png": tile_png(4)}), tmp_path / "out")

    assert report.nested_archives == [tmp_path / "out" / "batch" / "inner.zip"]
    assert (tmp_path / "out" / "batch" / "inner.zip").read_bytes() == inner
    assert not (tmp_path / "out" / "batch" / "inner.png").exists()


def test_zip_bomb_ratio_rejected(tmp_path):
    bomb = build_zip({"tiles/a.png": tile_png(5), "tiles/zeros.png": bytes(20 * 1024 * 1024)})
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as caught:
        extract_archive(bomb, dest, name="bomb.zip")

    message = str(caught.value)
    assert "bomb.zip" in message
    assert "max_ratio" in message
    assert entries_in(dest) == []


def test_zip_total_size_limit(tmp_path):
    data = build_zip(gashissdb_members(per_class=3), compression=zipfile.ZIP_STORED)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as caught:
        extract_archive(data, dest, max_total_bytes=2000, name="big.zip")

    assert "big.zip" in str(caught.value)
    assert "max_total_bytes" in str(caught.value)
    assert entries_in(dest) == []


def test_zip_many_tiny_files_rejected(tmp_path):
    data = build_zip({f"tiles/{index:05d}.png": b"x" for index in range(3000)}, compression=zipfile.ZIP_STORED)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as caught:
        extract_archive(data, dest, max_members=1000, name="many.zip")

    assert "max_members" in str(caught.value)
    assert "1,000" in str(caught.value)
    assert entries_in(dest) == []


def test_zip_many_tiny_files_within_limit(tmp_path):
    data = build_zip({f"tiles/{index:05d}.png": b"x" for index in range(3000)}, compression=zipfile.ZIP_STORED)
    report = extract_archive(data, tmp_path / "out")

    assert len(report.files) == 3000
    assert report.total_bytes == 3000


def test_zip_small_text_exempt_from_ratio(tmp_path):
    # 500 KiB of one repeated byte compresses about 1,000-fold but stays below 1 MiB.
    report = extract_archive(build_zip({"notes.txt": b"a" * 500 * 1024}), tmp_path / "out")

    assert len(report.files) == 1


def test_failure_leaves_existing_files_alone(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError):
        extract_archive(build_zip({"keep.txt": b"x" * 5000}), dest, max_total_bytes=100)

    assert entries_in(dest) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "mine"


def test_existing_file_replaced(tmp_path):
    dest = tmp_path / "out"
    (dest / "a").mkdir(parents=True)
    (dest / "a" / "tile.png").write_bytes(b"old")
    (dest / "a" / "other.png").write_bytes(b"other")
    report = extract_archive(build_zip({"a/tile.png": b"new"}), dest)

    assert report.skipped == []
    assert (dest / "a" / "tile.png").read_bytes() == b"new"
    assert (dest / "a" / "other.png").read_bytes() == b"other"


def test_existing_symlink_in_dest_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "tiles").symlink_to(outside, target_is_directory=True)
    report = extract_archive(build_zip({"tiles/a.png": b"x", "b.png": b"y"}), dest)

    assert skipped_codes(report) == {"tiles/a.png": "conflict"}
    assert list(outside.iterdir()) == []
    assert report.files == [dest.resolve() / "b.png"]


def test_no_staging_folder_left(tmp_path):
    dest = tmp_path / "out"
    extract_archive(build_zip({"a.png": b"x"}), dest)
    with pytest.raises(ArchiveError):
        extract_archive(build_zip({"b.png": bytes(5000)}), dest, max_total_bytes=10)

    assert entries_in(dest) == ["a.png"]


def test_full_disk_reported_before_writing(tmp_path, monkeypatch):
    def small_disk(path):
        return shutil._ntuple_diskusage(total=10_000, used=9_000, free=1_000)

    monkeypatch.setattr(shutil, "disk_usage", small_disk)
    with pytest.raises(ArchiveError) as caught:
        extract_archive(build_zip({"a.png": bytes(5000)}, compression=zipfile.ZIP_STORED), tmp_path / "out")

    message = str(caught.value)
    assert "4.9 KiB" in message  # the 5,000 bytes needed
    assert "1000 bytes" in message.replace(",", "")
    assert entries_in(tmp_path / "out") == []


def test_progress_sees_every_member(tmp_path):
    seen = []

    def progress(members):
        for member in members:
            seen.append(member)
            yield member

    extract_archive(build_zip({"a.png": b"x", "b/": b"", "b/c.png": b"y"}), tmp_path / "out", progress=progress)

    assert len(seen) == 3


# --------------------------------------------------------------------------- RAR


def test_rar_extracts_gashissdb_layout(tmp_path):
    members = gashissdb_members()
    data = build_rar4([("160", b"", stat.S_IFDIR | 0o755), *rar_tiles(members)])
    archive = tmp_path / "GasHisSDB.rar"
    archive.write_bytes(data)
    report = extract_archive(archive, tmp_path / "out")

    assert report.format == "rar"
    assert report.skipped == []
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in report.files) == sorted(members)
    name = "120/Abnormal/Abnormal-00002.png"
    assert (tmp_path / "out" / name).read_bytes() == members[name]


def test_rar_hostile_members_skipped(tmp_path):
    data = build_rar4(
        [
            ("../evil.png", b"x", 0o100644),
            ("/abs.png", b"x", 0o100644),
            ("link.png", b"/etc/passwd", stat.S_IFLNK | 0o777),
            ("fifo", b"", stat.S_IFIFO | 0o644),
            ("160/Normal/Normal-00001.png", tile_png(0), 0o100644),
        ]
    )
    dest = tmp_path / "out"
    report = extract_archive(data, dest, name="hostile.rar")

    codes = skipped_codes(report)
    assert codes["../evil.png"] == "path_traversal"
    assert codes["/abs.png"] == "absolute_path"
    assert codes["link.png"] == "symlink"
    assert codes["fifo"] == "special_file"
    assert entries_in(tmp_path) == ["out", "out/160", "out/160/Normal", "out/160/Normal/Normal-00001.png"]


def test_rar_total_size_limit(tmp_path):
    data = build_rar4(rar_tiles(gashissdb_members()))
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as caught:
        extract_archive(data, dest, max_total_bytes=1000, name="big.rar")

    assert "big.rar" in str(caught.value)
    assert "max_total_bytes" in str(caught.value)
    assert entries_in(dest) == []


def test_rar_many_members_rejected(tmp_path):
    data = build_rar4([(f"t/{index}.png", b"x", 0o100644) for index in range(1500)])
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as caught:
        extract_archive(data, dest, max_members=1000, name="many.rar")

    assert "max_members" in str(caught.value)
    assert entries_in(dest) == []


def test_rar_corrupt_header_rejected(tmp_path):
    data = bytearray(build_rar4([("a.png", b"A" * 100, 0o100644)]))
    data[data.index(b"a.png")] = ord("c")  # the header CRC no longer matches
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as caught:
        extract_archive(bytes(data), dest, name="bad.rar")

    assert "bad.rar" in str(caught.value)
    assert entries_in(dest) == []


def test_rar_truncated_rejected(tmp_path):
    data = build_rar4(rar_tiles(gchtid_members(per_class=1)))
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError):
        extract_archive(data[: len(data) // 2], dest, name="cut.rar")

    assert entries_in(dest) == []


# --------------------------------------------------------------------------- formats


def test_format_detection():
    assert archive_format(build_zip({"a": b"x"})) == "zip"
    assert archive_format(build_rar4([("a", b"x", 0o100644)])) == "rar"
    assert archive_format(b"Rar!\x1a\x07\x01\x00" + bytes(8)) == "rar"


def test_not_an_archive_rejected(tmp_path):
    with pytest.raises(ArchiveError) as caught:
        extract_archive(tile_png(0), tmp_path / "out", name="tile.png")

    assert "tile.png" in str(caught.value)
    assert "not a zip or RAR archive" in str(caught.value)


def test_missing_archive_rejected(tmp_path):
    with pytest.raises(ArchiveError) as caught:
        extract_archive(tmp_path / "absent.zip", tmp_path / "out")

    assert "not found" in str(caught.value)


def test_invalid_limit_rejected(tmp_path):
    with pytest.raises(ValueError):
        extract_archive(build_zip({"a": b"x"}), tmp_path / "out", max_members=0)


def test_dest_that_is_a_file_rejected(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ArchiveError) as caught:
        extract_archive(build_zip({"a": b"x"}), target)

    assert "is a file" in str(caught.value)


def test_extracted_files_get_default_mode(tmp_path):
    data = zip_with_unix_mode("setuid.png", b"x", stat.S_IFREG | 0o4777)
    report = extract_archive(data, tmp_path / "out")

    mode = (tmp_path / "out" / "setuid.png").stat().st_mode
    assert report.skipped == []
    assert not mode & stat.S_ISUID
    assert oct(mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
