"""Safe extraction: hostile zip and tar.gz archives are refused and nothing is written outside the target."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from support.fixtures import make_tar_gz, make_zip, sha256

from zoo.archive import Limits, extract
from zoo.errors import UnsafeArchiveError

GOOD = {"m/model.ckpt.index": b"index", "m/vocab.txt": "[PAD]\n的\n".encode(), "README": b"hello"}


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("kind,maker", [("zip", make_zip), ("tar.gz", make_tar_gz)])
def test_good_archive_extracts_with_hashes(tmp_path: Path, kind: str, maker) -> None:
    archive = tmp_path / f"a.{kind}"
    archive.write_bytes(maker(GOOD))
    files = extract(archive, tmp_path / "out", kind)
    assert {rel: (e.sha256, e.size) for rel, e in files.items()} == {
        rel: (sha256(data), len(data)) for rel, data in GOOD.items()}
    assert {rel: (tmp_path / "out" / rel).read_bytes() for rel in GOOD} == GOOD
    assert tree(tmp_path) == {f"a.{kind}", "out", "out/m", "out/README", *(f"out/{r}" for r in GOOD)}


def symlink_zip_entry(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3
    return info


def device_zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFCHR | 0o644) << 16
    info.create_system = 3
    return info


HOSTILE = {
    "zip-slip": ("zip", lambda: zip_with([("ok.txt", b"x"), ("../evil.txt", b"pwned")]), "'..' component"),
    "zip-absolute": ("zip", lambda: zip_with([("/tmp/zoo-evil.txt", b"pwned")]), "absolute path"),
    "zip-symlink": ("zip", lambda: zip_with([(symlink_zip_entry("link", "/etc/passwd"), b"/etc/passwd")]),
                    "symbolic link"),
    "zip-device": ("zip", lambda: zip_with([(device_zip_entry("dev"), b"")]), "device"),
    "zip-bomb": ("zip", lambda: zip_with([("zeros.bin", bytes(64 << 20))], zipfile.ZIP_DEFLATED), "bomb"),
    "zip-backslash": ("zip", lambda: zip_with([("..\\evil.txt", b"pwned")]), "backslash"),
    "tar-dotdot": ("tar.gz", lambda: tar_with([(tar_info("a/../../evil.txt"), b"pwned")]), "'..' component"),
    "tar-absolute": ("tar.gz", lambda: tar_with([(tar_info("/tmp/zoo-evil.txt"), b"pwned")]), "absolute path"),
    "tar-symlink-escape": ("tar.gz", lambda: tar_with([(tar_info("m", tarfile.SYMTYPE, "/etc"), None),
                                                       (tar_info("m/passwd"), b"pwned")]), "symbolic link"),
    "tar-hardlink": ("tar.gz", lambda: tar_with([(tar_info("h", tarfile.LNKTYPE, "/etc/passwd"), None)]),
                     "hard link"),
    "tar-device": ("tar.gz", lambda: tar_with([(tar_info("dev", tarfile.CHRTYPE), None)]), "device"),
    "tar-fifo": ("tar.gz", lambda: tar_with([(tar_info("fifo", tarfile.FIFOTYPE), None)]), "fifo"),
    "tar-bomb": ("tar.gz", lambda: tar_with([(tar_info("zeros.bin"), bytes(64 << 20))]), "bomb"),
    "tar-duplicate": ("tar.gz", lambda: tar_with([(tar_info("a"), b"1"), (tar_info("./a"), b"2")]), "twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    kind, maker, why = HOSTILE[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = work / f"a.{kind}"
    archive.write_bytes(maker())
    outside = tmp_path.parent / "zoo-evil.txt"
    with pytest.raises(UnsafeArchiveError, match=why):
        extract(archive, work / "out", kind)
    assert tree(tmp_path) == {"work", f"work/a.{kind}"}  # no out/, no staging dir, nothing escaped
    assert not outside.exists() and not Path("/tmp/zoo-evil.txt").exists()


def test_limits_bound_file_and_total_size(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"a": b"x" * 1000, "b": b"y" * 1000}))
    with pytest.raises(UnsafeArchiveError, match="per-file limit"):
        extract(archive, tmp_path / "o1", "zip", limits=Limits(max_file=999))
    with pytest.raises(UnsafeArchiveError, match="expanded total"):
        extract(archive, tmp_path / "o2", "zip", limits=Limits(max_total=1500))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_lying_zip_header_is_caught(tmp_path: Path) -> None:
    """A header that under-declares a member's size cannot make zoo write more than declared."""
    data = bytearray(make_zip({"a.bin": b"z" * 5000}))
    # patch the central directory's uncompressed size (offset 24 in the entry) to 10 bytes
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    archive = tmp_path / "a.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(UnsafeArchiveError):
        extract(archive, tmp_path / "out", "zip")
    assert not (tmp_path / "out").exists()


def test_truncated_archives_are_refused(tmp_path: Path) -> None:
    for kind, maker in (("zip", make_zip), ("tar.gz", make_tar_gz)):
        archive = tmp_path / f"a.{kind}"
        archive.write_bytes(maker({"a.bin": bytes(range(256)) * 400})[:-300])
        with pytest.raises(UnsafeArchiveError, match="not a valid|damaged"):
            extract(archive, tmp_path / f"out-{kind}", kind)
        assert not (tmp_path / f"out-{kind}").exists()
