"""What the embedding converters (``minilm_gguf``, ``e5_gguf``) write alike: a GGUF of llama.cpp's
``bert`` architecture (bidirectional attention, mean pooling), written to a ``.part`` file and
renamed into place only once complete."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def bert_gguf(dest: Path, name: str, *, layers: int, context: int, hidden: int, ffn: int, heads: int,
              eps: float, file_type: Any) -> Iterator[Any]:
    """A ``gguf.GGUFWriter`` with the network's header written; the caller adds the vocabulary and
    the tensors, and the file is written out and renamed to ``dest`` when the block ends."""
    import gguf

    dest = Path(dest)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # unique: two processes may prepare at once
    writer = gguf.GGUFWriter(str(tmp), "bert")
    writer.add_name(name)
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_layer_norm_eps(eps)
    writer.add_file_type(file_type)
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    yield writer
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dest)
