"""Reader for CTranslate2's model.bin (binary version 6), as ctranslate2's ModelSpec._serialize writes it.

File layout (little endian): u32 version, string spec name, u32 revision, u32 n_variables, then per variable
`string name, u8 rank, u32 dims[rank], u8 dtype_id, u32 n_bytes, bytes`, then u32 n_aliases and per alias
`string alias, string target`. A string is u16 length (including a trailing NUL) followed by the bytes.
dtype ids follow CTranslate2's DataType enum: float32, int8, int16, int32, float16, bfloat16.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch

from unique_asr.errors import ModelError

_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
SUPPORTED_VERSIONS = (5, 6)


@dataclass(frozen=True)
class CT2Model:
    """Parsed model.bin: spec name/revision and variables (aliases resolved to the same tensor)."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]


class _Reader:
    def __init__(self, stream: BinaryIO, label: str):
        self.stream, self.label = stream, label

    def take(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise ModelError(f"{self.label}: truncated CTranslate2 model (wanted {n} bytes, got {len(data)})")
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        raw = self.take(self.u16())
        if not raw or raw[-1] != 0:
            raise ModelError(f"{self.label}: corrupt CTranslate2 model (unterminated string)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError(f"{self.label}: corrupt CTranslate2 model (bad string: {exc})") from None


class _Concat(io.RawIOBase):
    """Read-only stream over several files in order (model.bin split into parts)."""

    def __init__(self, paths: Iterable[str]):
        self._files = [open(p, "rb") for p in paths]
        self._i = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._i < len(self._files):
            n = self._files[self._i].readinto(buffer)
            if n:
                return n
            self._i += 1
        return 0

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _variable(r: _Reader) -> tuple[str, torch.Tensor]:
    name = r.string()
    shape = [r.u32() for _ in range(r.u8())]
    type_id = r.u8()
    if type_id >= len(_DTYPES):
        raise ModelError(
            f"{r.label}: corrupt CTranslate2 model (variable {name!r} has unknown dtype id {type_id})"
        )
    dtype = _DTYPES[type_id]
    n_bytes = r.u32()
    expected = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    if n_bytes != expected:
        raise ModelError(
            f"{r.label}: corrupt CTranslate2 model ({name!r}: {n_bytes} bytes for shape {shape} {dtype})"
        )
    data = bytearray(r.take(n_bytes))
    tensor = torch.frombuffer(data, dtype=dtype) if n_bytes else torch.empty(0, dtype=dtype)
    return name, tensor.reshape(shape)


def read_ct2(paths: str | list[str]) -> CT2Model:
    """Parse a CTranslate2 model.bin (one path, or the ordered parts of a split file) into tensors.

    Raises ModelError naming the (first) file when it is truncated, corrupt or of an unknown version.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    label = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} parts)"
    try:
        stream = io.BufferedReader(_Concat(paths), buffer_size=1 << 20)
    except OSError as exc:
        raise ModelError(f"{label}: cannot open ({exc.strerror})") from None
    with stream:
        r = _Reader(stream, label)
        version = r.u32()
        if version not in SUPPORTED_VERSIONS:
            raise ModelError(f"{label}: not a CTranslate2 model of a supported version (header {version})")
        spec, revision = r.string(), r.u32()
        variables = dict(_variable(r) for _ in range(r.u32()))
        for _ in range(r.u32()):
            alias, target = r.string(), r.string()
            if target not in variables:
                raise ModelError(
                    f"{label}: corrupt CTranslate2 model (alias {alias!r} -> missing {target!r})"
                )
            variables[alias] = variables[target]
        if stream.read(1):
            raise ModelError(f"{label}: corrupt CTranslate2 model (trailing bytes after the aliases)")
    return CT2Model(spec=spec, revision=revision, variables=variables)


def dequantize(variables: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Floating tensor of variable `name` (float variables keep their stored dtype); int8/int16 weights are
    divided by their per-row `<name>_scale` (float32 result).

    CTranslate2 quantizes as q = round(w * scale), scale = 127 / max|w_row| (int8), one scale per output row.
    """
    value = variables[name]
    if value.is_floating_point():
        return value
    scale = variables.get(f"{name}_scale")
    if scale is None:
        raise ModelError(f"quantized variable {name!r} has no {name}_scale")
    scale = scale.float()
    return value.float() / (scale[:, None] if scale.dim() == 1 and value.dim() == 2 else scale)
