"""What a GGUF model file's header says (architecture, parameters, quantization, context length,
chat template), after checking that the file holds every tensor it lists.

The header is read here, not with ``gguf.GGUFReader``: that reader decodes every vocabulary entry
into numpy objects (15 s for SmolLM2's 49k tokens, minutes for a 150k vocabulary), where skipping
them takes milliseconds. The ``gguf`` package still names the value and tensor types.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StartupError

MAX_KV = 1 << 20
MAX_TENSORS = 1 << 20
_U64 = struct.Struct("<Q")


class NotGGUF(StartupError):
    """The file is not a usable GGUF model (garbage, truncated, an unknown version); ``reason`` says
    why, without the file's name."""

    def __init__(self, reason: str, path: Path | None = None):
        super().__init__(f"{path} is not a usable GGUF model file: {reason}" if path else reason)
        self.reason = reason


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    parameters: int
    quantization: str
    context_length: int | None
    chat_template: bool



class _Header:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise NotGGUF("it ends inside its header (an incomplete download?)")
        value = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> bytes:
        length = self.take("<Q")
        if self.pos + length > len(self.buf):
            raise NotGGUF("it ends inside its header (an incomplete download?)")
        self.pos += length
        return self.buf[self.pos - length:self.pos]

    def value(self, kind: int, keep: bool) -> Any:
        from gguf import GGUFValueType as T

        scalar = {T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I", T.INT32: "<i",
                  T.FLOAT32: "<f", T.BOOL: "<?", T.UINT64: "<Q", T.INT64: "<q", T.FLOAT64: "<d"}
        if kind in scalar:
            return self.take(scalar[kind])
        if kind == T.STRING:
            raw = self.string()
            return raw.decode("utf-8", "replace") if keep else None
        if kind == T.ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in scalar:  # skipped in one step
                size = struct.calcsize(scalar[item]) * count
                if self.pos + size > len(self.buf):
                    raise NotGGUF("it ends inside its header (an incomplete download?)")
                self.pos += size
            elif item == T.STRING:  # a vocabulary: 100k+ strings, walked without decoding
                pos, length = self.pos, _U64.unpack_from
                try:
                    for _ in range(count):
                        pos += 8 + length(self.buf, pos)[0]
                except struct.error:
                    pos = len(self.buf) + 1
                if pos > len(self.buf):
                    raise NotGGUF("it ends inside its header (an incomplete download?)")
                self.pos = pos
            else:
                for _ in range(count):
                    self.value(item, False)
            return None
        raise NotGGUF(f"its header holds an unknown value type ({kind})")


def read_gguf(path: Path) -> GGUFInfo:
    """What a GGUF file's header says, after checking that the file holds every tensor it lists."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    try:
        with open(path, "rb") as fp:
            size = fp.seek(0, 2)
            if size < 24:
                raise NotGGUF("it does not start like a GGUF file")
            with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _Header(buf)
                magic, version = header.take("<4sI")
                if magic != b"GGUF":
                    raise NotGGUF("it does not start like a GGUF file")
                if version not in (2, 3):
                    raise NotGGUF(f"it is GGUF version {version}; flowbox reads versions 2 and 3")
                n_tensors, n_kv = header.take("<QQ")
                if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
                    raise NotGGUF(f"its header lists {n_tensors} tensors and {n_kv} values")
                meta: dict[str, Any] = {}
                for _ in range(n_kv):
                    key = header.string().decode("utf-8", "replace")
                    meta[key] = header.value(header.take("<I"), keep=not key.startswith("tokenizer.ggml."))
                tensors = []
                for _ in range(n_tensors):
                    header.string()
                    n_dims = header.take("<I")
                    if n_dims > 8:
                        raise NotGGUF(f"a tensor has {n_dims} dimensions")
                    dims = header.take(f"<{n_dims}Q") if n_dims else ()
                    dims = dims if isinstance(dims, tuple) else (dims,)
                    kind, offset = header.take("<IQ")
                    count = 1
                    for dim in dims:
                        count *= dim
                    tensors.append((kind, offset, count))
                header_end = header.pos
    except NotGGUF as exc:
        raise NotGGUF(exc.reason, path) from None
    except OSError as exc:
        raise StartupError(f"cannot read {path}: {exc.strerror or exc}") from None
    alignment = meta.get("general.alignment") or 32
    data_start = -(-header_end // alignment) * alignment
    end, by_type = data_start, {}
    for kind, offset, count in tensors:
        by_type[kind] = by_type.get(kind, 0) + count
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            continue  # a type newer than this gguf package: llama.cpp judges it
        end = max(end, data_start + offset + count * type_size // block)
    if end > size:
        raise NotGGUF(f"it is truncated ({size} of {end} bytes)", path)
    if not tensors:
        raise NotGGUF("it holds no tensors (a vocabulary-only file?)", path)
    arch = str(meta.get("general.architecture") or "")
    return GGUFInfo(
        architecture=arch,
        parameters=sum(by_type.values()),
        quantization=_quantization(meta.get("general.file_type"), by_type, LlamaFileType, GGMLQuantizationType),
        context_length=meta.get(f"{arch}.context_length"),
        chat_template=bool(meta.get("tokenizer.chat_template")),
    )


def _quantization(file_type, by_type: dict[int, int], file_types, tensor_types) -> str:
    """The file's declared type (Q4_K_M), else the type holding most of its weights."""
    try:
        if file_type is not None:
            return file_types(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        pass
    try:
        return tensor_types(max(by_type, key=by_type.get)).name
    except ValueError:
        return "unknown"
