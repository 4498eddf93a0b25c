"""TensorFlow V2 checkpoints (TensorBundle): ``PREFIX.index`` + ``PREFIX.data-NNNNN-of-NNNNN`` shards.

The index (an SSTable, see :mod:`zoo.tf.table`) maps ``""`` to a ``BundleHeaderProto`` and every variable
name to a ``BundleEntryProto`` saying which shard holds its bytes, where, and their masked CRC32C. Tensor
bytes are raw row-major values, so a variable is read by memory-mapping its shard and viewing the bytes
as a torch tensor — no copy, nothing read until it is used.

Listing variables needs neither torch nor the data files' contents; torch is imported on the first read.
:class:`ShardReader` streams the data files instead (no torch, no mapping), checking CRCs and hashing the files in
one pass — what the converter uses.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import math
import mmap
import os
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import CheckpointError, IntegrityError, NotFoundError, UnsupportedError, UsageError
from zoo.tf.proto import BundleEntry, BundleHeader, ProtoError
from zoo.tf.table import Table, crc32c, mask_crc

if TYPE_CHECKING:
    import torch

#: TensorFlow ``DataType`` enum values zoo reads, with their byte sizes.
DTYPES: dict[int, tuple[str, int]] = {
    1: ("float32", 4),
    2: ("float64", 8),
    3: ("int32", 4),
    9: ("int64", 8),
    14: ("bfloat16", 2),
    19: ("float16", 2),
}
#: Names of other ``DataType`` values, so errors and listings can say what they are.
OTHER_DTYPES: dict[int, str] = {
    4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64", 10: "bool", 11: "qint8", 12: "quint8",
    13: "qint32", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 20: "resource",
    21: "variant", 22: "uint32", 23: "uint64",
}
_BIG_ENDIAN = 1
_SUPPORTED_VERSION = 1  # kTensorBundleVersion
_SUFFIX = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})\Z")


def dtype_name(code: int) -> str:
    if code in DTYPES:
        return DTYPES[code][0]
    return OTHER_DTYPES.get(code, f"DataType({code})")


@dataclasses.dataclass(frozen=True)
class Variable:
    """One checkpoint variable: what it is and where its bytes are."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    partitioned: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def supported(self) -> bool:
        return self.dtype in ITEMSIZE and not self.partitioned


#: Byte size of each dtype zoo reads and writes, by name (the TF writer and safetensors use it too).
ITEMSIZE: dict[str, int] = dict(DTYPES.values())


def find_prefix(path: str | os.PathLike[str]) -> Path:
    """The checkpoint prefix for a prefix, an ``.index``/``.data-*`` file, or a directory with one checkpoint.

    A directory with several checkpoints is resolved through its ``checkpoint`` file when it names one of them.
    """
    p = Path(path)
    if p.is_dir():
        prefixes = sorted(index.with_suffix("") for index in p.glob("*.index"))
        if len(prefixes) == 1:
            return prefixes[0]
        if not prefixes:
            raise NotFoundError(f"{p}: no TensorFlow checkpoint here (no *.index file)",
                                hint="pass the checkpoint prefix, e.g. DIR/bert_model.ckpt")
        latest = _checkpoint_file_choice(p)
        if latest is not None and latest in prefixes:
            return latest
        names = ", ".join(prefix.name for prefix in prefixes)
        raise UsageError(f"{p}: holds {len(prefixes)} checkpoints ({names})",
                         hint="pass the prefix of the one you want, e.g. " + str(prefixes[-1]))
    p = p.with_name(_SUFFIX.sub("", p.name))
    if not p.with_name(p.name + ".index").is_file():
        raise NotFoundError(f"{p}.index: no such checkpoint index",
                            hint="pass a checkpoint prefix (PATH where PATH.index exists) or its directory")
    return p


def _checkpoint_file_choice(directory: Path) -> Path | None:
    """The prefix named by ``model_checkpoint_path`` in a TF ``checkpoint`` text file, if any."""
    try:
        text = (directory / "checkpoint").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.MULTILINE)
    return directory / Path(match.group(1)).name if match else None


def data_file(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


class TensorBundle(Mapping[str, "torch.Tensor"]):
    """A TensorFlow checkpoint as a read-only mapping from variable name to tensor.

    Opening parses the index and checks that every variable's bytes lie inside an existing shard. Tensors
    are created on access, as zero-copy views of the memory-mapped shard (writes stay private to this
    process), after verifying the stored CRC32C (``verify=False`` skips that).
    """

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.prefix = find_prefix(path)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        self.verify = verify
        self.header, self.variables = self._read_index()
        # bound the shard count by the files that exist before building any list of that size
        existing = sum(1 for _ in self.prefix.parent.glob(glob.escape(self.prefix.name) + ".data-*-of-*"))
        if self.header.num_shards > 2 * existing + 16:  # a few missing shards are named one by one below
            raise CheckpointError(f"{self.index_path}: the header says {self.header.num_shards:,} data shards, but "
                                  f"{existing} data file(s) lie next to it",
                                  hint="copy every PREFIX.data-* file next to the .index file; a header this far off "
                                       "means the index is damaged")
        self.data_files = [data_file(self.prefix, i, self.header.num_shards) for i in range(self.header.num_shards)]
        self._check_shards()
        self._maps: dict[int, mmap.mmap] = {}

    # ------------------------------------------------------------------------------------------ index
    def _read_index(self) -> tuple[BundleHeader, dict[str, Variable]]:
        header: BundleHeader | None = None
        variables: dict[str, Variable] = {}
        for key, value in Table(self.index_path):
            try:
                if key == b"":
                    header = BundleHeader.parse(value)
                    self._check_header(header)
                    continue
                if key[:1] == b"\x00":  # data of one slice of a partitioned variable (encoded slice key)
                    continue
                name = key.decode("utf-8")
                variables[name] = self._variable(name, BundleEntry.parse(value))
            except (ProtoError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{self.index_path}: garbled entry for key {key!r} ({exc})") from None
        if header is None:
            raise CheckpointError(f"{self.index_path}: no bundle header entry; not a TensorFlow V2 checkpoint index")
        return header, variables

    def _check_header(self, header: BundleHeader) -> None:
        if header.endianness == _BIG_ENDIAN:
            raise UnsupportedError(f"{self.index_path}: checkpoint was written on a big-endian machine; "
                                   "zoo reads little-endian checkpoints only",
                                   hint="re-save it with TensorFlow on a little-endian (x86/ARM) machine")
        if header.endianness != 0:
            raise CheckpointError(f"{self.index_path}: unknown byte order {header.endianness} in the header")
        if header.min_consumer > _SUPPORTED_VERSION:
            raise UnsupportedError(f"{self.index_path}: bundle format version needs a reader >= "
                                   f"{header.min_consumer}; zoo implements version {_SUPPORTED_VERSION}")
        if header.num_shards < 1:
            raise CheckpointError(f"{self.index_path}: header says {header.num_shards} data shards")

    def _variable(self, name: str, entry: BundleEntry) -> Variable:
        if entry.shape is None or any(d < 0 for d in entry.shape):
            raise CheckpointError(f"{self.index_path}: variable {name!r} has an unknown shape")
        var = Variable(name=name, dtype=dtype_name(entry.dtype), shape=entry.shape, shard=entry.shard_id,
                       offset=entry.offset, size=entry.size, crc32c=entry.crc32c,
                       partitioned=entry.num_slices > 0)
        if var.dtype in ITEMSIZE and not var.partitioned and var.size != var.numel * ITEMSIZE[var.dtype]:
            raise CheckpointError(f"{self.index_path}: variable {name!r} ({var.dtype}{list(var.shape)}) "
                                  f"should take {var.numel * ITEMSIZE[var.dtype]} bytes, the index says {var.size}")
        if var.offset < 0 or var.size < 0:
            raise CheckpointError(f"{self.index_path}: variable {name!r} has a negative offset or size")
        return var

    def _check_shards(self) -> None:
        sizes = []
        for path in self.data_files:
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:
                raise CheckpointError(f"{path}: data shard is missing ({len(self.data_files)} shards expected "
                                      f"by {self.index_path.name})",
                                      hint="copy every PREFIX.data-* file next to the .index file") from None
        for var in self.variables.values():
            if var.partitioned:
                continue
            if not 0 <= var.shard < len(sizes):
                raise CheckpointError(f"{self.index_path}: variable {var.name!r} is in shard {var.shard}, "
                                      f"but the checkpoint has {len(sizes)} shards")
            if var.offset + var.size > sizes[var.shard]:
                raise CheckpointError(f"{self.data_files[var.shard]}: truncated: variable {var.name!r} needs "
                                      f"bytes {var.offset}..{var.offset + var.size}, the file has {sizes[var.shard]}",
                                      hint="download or copy the checkpoint again")

    # ---------------------------------------------------------------------------------------- mapping
    def __len__(self) -> int:
        return len(self.variables)

    def __iter__(self) -> Iterator[str]:
        return iter(self.variables)

    def __contains__(self, name: object) -> bool:
        return name in self.variables

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.read(self.variables[name])

    def __repr__(self) -> str:
        return f"TensorBundle({str(self.prefix)!r}, {len(self)} variables)"

    # ---------------------------------------------------------------------------------------- reading
    def check_readable(self, var: Variable) -> None:
        """Raise :class:`UnsupportedError` for a partitioned variable (zoo reads unpartitioned ones only)."""
        if var.partitioned:
            raise UnsupportedError(f"{self.index_path}: variable {var.name!r} is partitioned into slices; "
                                   "zoo reads unpartitioned checkpoints only",
                                   hint="re-save the variables unpartitioned with TensorFlow")

    def raw(self, var: Variable) -> memoryview:
        """The variable's stored bytes (a view of the mapped shard), CRC-checked when ``verify`` is set."""
        self.check_readable(var)
        if var.size == 0:
            return memoryview(b"")
        view = memoryview(self._map(var.shard))[var.offset:var.offset + var.size]
        if self.verify:
            actual = mask_crc(crc32c(view))
            if actual != var.crc32c:
                raise _crc_mismatch(self.data_files[var.shard], var, actual)
        return view

    def read(self, var: Variable | str) -> torch.Tensor:
        """The variable as a tensor viewing the shard's bytes (zero-copy)."""
        import torch

        if isinstance(var, str):
            var = self.variables[var]
        if var.dtype not in ITEMSIZE:
            raise UnsupportedError(f"{self.index_path}: variable {var.name!r} has unsupported dtype {var.dtype} "
                                   f"(zoo reads {', '.join(sorted(ITEMSIZE))})")
        dtype = getattr(torch, var.dtype)
        view = self.raw(var)
        if var.numel == 0:
            return torch.empty(var.shape, dtype=dtype)
        return torch.frombuffer(view, dtype=dtype, count=var.numel).reshape(var.shape)

    def _map(self, shard: int) -> mmap.mmap:
        mm = self._maps.get(shard)
        if mm is None:
            with open(self.data_files[shard], "rb") as fh:
                # private copy-on-write mapping: tensors are writable without touching the file
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[shard] = mm
        return mm

    def close(self) -> None:
        """Unmap the shards. Tensors still viewing them keep their mapping alive until they are freed."""
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a tensor still views it; the mapping goes when the tensor does
                pass
        self._maps.clear()

    def __enter__(self) -> TensorBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class FileDigest:
    """sha256 and size of a file, computed while :class:`ShardReader` read it."""

    path: Path
    sha256: str
    size: int


_DONE = object()


class ShardReader:
    """Reads a checkpoint's data shards front to back, once, on a background thread, so a conversion reads each
    input once: the thread checks each wanted variable's CRC32C and (``sha256``) hashes every shard file whole in
    the same pass, while the consumer gets zero-copy views — a ``whole`` variable before it is checked, so the
    consumer works on it meanwhile — and gives them back with :meth:`release`, which bounds the memory mapped
    (``ahead``). How chunks, ordering, errors and limits work: docs/conversion.md, "The shard reader"."""

    def __init__(self, bundle: TensorBundle, wanted: Iterable[str], *, whole: Iterable[str] = (),
                 sha256: bool = True, chunk: int = 8 << 20, depth: int = 4, ahead: int | None = None) -> None:
        self.bundle = bundle
        self.wanted = set(wanted)
        self.whole = set(whole) & self.wanted
        unknown = self.wanted - set(bundle.variables)
        if unknown:
            raise KeyError(", ".join(sorted(unknown)))
        for name in sorted(self.wanted):
            bundle.check_readable(bundle.variables[name])
        self.hashing = sha256
        self.chunk = max(8, chunk - chunk % 8)  # a multiple of every item size: chunks hold whole elements
        self.ahead = ahead
        self.digests: list[FileDigest] = []
        #: the wanted variables, in the order they come
        self.order = [v for v in sorted(bundle.variables.values(), key=_read_key) if v.name in self.wanted]
        self._maps: dict[int, mmap.mmap] = {}
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._pending = threading.Condition()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name="zoo-shard-reader", daemon=True)
        self._started = False

    # ------------------------------------------------------------------------------------- consumer
    def __iter__(self) -> Iterator[tuple[Variable, memoryview]]:
        if self._started:
            raise RuntimeError("a ShardReader is read once")
        self._started = True
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
        self._thread.join()

    def release(self, var: Variable) -> None:
        """The consumer is done with ``var``: its pages leave this process, and the thread may go further."""
        self._drop(var.shard, var.offset, var.offset + var.size)
        with self._pending:
            self._in_flight -= var.size
            self._pending.notify_all()

    def close(self) -> None:
        """Stop the thread (when iteration was abandoned), wait for it and unmap the shards (views still held
        keep their mapping alive until they are released)."""
        self._stop.set()
        if self._started:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:
                pass

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- producer
    def _mapped(self, shard: int) -> memoryview:
        mm = self._maps.get(shard)
        if mm is None:
            with open(self.bundle.data_files[shard], "rb") as fh:
                if fh.seek(0, 2) == 0:
                    return memoryview(b"")
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[shard] = mm
        return memoryview(mm)

    def _drop(self, shard: int, begin: int, end: int) -> None:
        mm = self._maps.get(shard)
        if mm is not None:
            drop_pages(mm, begin, end)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def _start(self, var: Variable) -> None:
        with self._pending:
            while self.ahead is not None and self._in_flight and self._in_flight + var.size > self.ahead:
                if self._stop.is_set():
                    raise _Stopped()
                self._pending.wait(0.1)
            self._in_flight += var.size

    def _run(self) -> None:
        try:
            for shard, path in enumerate(self.bundle.data_files):
                self._read_shard(shard, path)
            self._put(_DONE)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, raised there
            try:
                self._put(exc)
            except _Stopped:
                pass

    def _read_shard(self, shard: int, path: Path) -> None:
        variables = sorted((v for v in self.bundle.variables.values() if v.shard == shard and not v.partitioned),
                           key=_read_key)
        if not self.hashing and not any(v.name in self.wanted for v in variables):
            return
        data = self._mapped(shard)
        sha = hashlib.sha256() if self.hashing else None
        pos = 0  # hashed up to here

        def hash_to(end: int, drop: bool) -> None:
            nonlocal pos
            if sha is None or end <= pos:
                return
            begin = pos
            for start in range(pos, end, self.chunk):
                sha.update(data[start:min(end, start + self.chunk)])
            pos = end
            if drop:
                self._drop(shard, begin, end)

        for var in variables:
            end = var.offset + var.size
            if end > len(data):  # the file shrank since the index was checked
                raise CheckpointError(f"{path}: truncated: variable {var.name!r} needs bytes {var.offset}..{end}, "
                                      f"the file has {len(data)}", hint="download or copy the checkpoint again")
            hash_to(var.offset, drop=True)  # a gap (TensorFlow leaves none)
            if var.name not in self.wanted:
                hash_to(end, drop=True)
                continue
            self._start(var)
            whole = var.name in self.whole
            if whole or not var.size:
                self._put((var, data[var.offset:end]))
            crc = 0
            for start in range(var.offset, end, self.chunk):
                stop = min(end, start + self.chunk)
                hash_to(stop, drop=False)
                if self.bundle.verify:
                    crc = crc32c(data[start:stop], crc)
                if not whole:
                    self._put((var, data[start:stop]))
            if self.bundle.verify and mask_crc(crc) != var.crc32c:
                raise _crc_mismatch(path, var, mask_crc(crc))
        hash_to(len(data), drop=True)
        if sha is not None:
            self.digests.append(FileDigest(path, sha.hexdigest(), len(data)))


def drop_pages(mm: mmap.mmap, begin: int, end: int) -> None:
    """Unmap the whole pages of ``mm`` in ``[begin, end)`` from this process: the page cache keeps them and a later
    read maps them again, so streaming a large file does not pile it up in resident memory. A no-op where
    ``madvise`` is missing."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = -(-begin // mmap.PAGESIZE) * mmap.PAGESIZE
    stop = end // mmap.PAGESIZE * mmap.PAGESIZE
    if stop > start:
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)


def _crc_mismatch(path: Path, var: Variable, actual: int) -> IntegrityError:
    return IntegrityError(f"{path}: CRC32C mismatch for variable {var.name!r} (stored {var.crc32c:#010x}, "
                          f"computed {actual:#010x}); the data is damaged",
                          hint="download or copy the checkpoint again")


def _read_key(var: Variable) -> tuple[int, int, int, str]:
    return var.shard, var.offset, var.size, var.name


class _Stopped(Exception):
    """The consumer closed the reader."""


def list_variables(path: str | Path) -> list[Variable]:
    """Every variable of a checkpoint, sorted by name, without reading tensor data (no torch import)."""
    bundle = TensorBundle(path)
    return [bundle.variables[name] for name in sorted(bundle.variables)]


def read_tf_checkpoint(path: str | Path) -> TensorBundle:
    """Open a TensorFlow checkpoint as a lazy ``Mapping[str, torch.Tensor]``.

    ``path`` is a checkpoint prefix (``DIR/bert_model.ckpt``), one of its files, or a directory holding
    exactly one checkpoint. Tensors hold exactly the stored values and are read (and CRC-checked) on access.
    """
    return TensorBundle(path)
