"""Write a ``.safetensors`` file one tensor at a time.

``safetensors.torch.save_file`` needs every tensor in memory at once; converting a checkpoint whose kernels
must all be transposed would then hold a second full copy of the model. The format is simple (8-byte
little-endian header length, JSON header with dtype/shape/byte offsets per tensor and ``__metadata__``,
then the raw little-endian bytes back to back), so this module streams it: the header is computed from
the shapes up front and each tensor is written, then dropped. Files are read back with ``safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from zoo.tf.bundle import ITEMSIZE

if TYPE_CHECKING:
    import torch

#: torch dtype name → safetensors dtype tag
DTYPE_TAGS = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int32": "I32",
              "int64": "I64"}


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    dtype: str  # torch dtype name, e.g. "float32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


def header(specs: Iterable[Spec], metadata: Mapping[str, str]) -> bytes:
    """The length prefix + JSON header for tensors stored back to back in ``specs`` order."""
    entries: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for spec in specs:
        entries[spec.name] = {"dtype": DTYPE_TAGS[spec.dtype], "shape": list(spec.shape),
                              "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def write_state(fh: BinaryIO | Any, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """A whole state dict as a safetensors file, streamed tensor by tensor (no serialised copy in memory)."""
    specs = [Spec(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in sorted(tensors.items())]
    fh.write(header(specs, metadata))
    for spec in specs:
        write_tensor(fh, spec, tensors[spec.name])


def write_tensor(fh: BinaryIO | Any, spec: Spec, tensor: torch.Tensor) -> None:
    """Append one tensor's bytes; it must match its spec and be contiguous."""
    import torch

    if str(tensor.dtype).removeprefix("torch.") != spec.dtype or tuple(tensor.shape) != spec.shape:
        raise AssertionError(f"{spec.name}: got {tensor.dtype}{list(tensor.shape)}, header says "
                             f"{spec.dtype}{list(spec.shape)}")
    if spec.nbytes == 0:
        return
    flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    fh.write(flat.numpy().data)
