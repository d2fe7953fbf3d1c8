"""Perplexity of GGUF model files on the same text, side by side: how much a quantization (or a
requantization of an already quantized file) costs, where a handful of answer-quality questions
(``answers.py``) cannot tell.

The text is cut into windows of ``--window`` tokens; each window is read in one pass and only the
tokens of its second half are scored, so every scored token has at least half a window of context.
Lower is better; the numbers mean something only beside each other (same text, same run).

    python scripts/eval/perplexity.py FILE.gguf [FILE.gguf ...] [--text FILE] [--tokens N] [--window N]

The text defaults to this repository's README.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def perplexity(path: str, text: str, *, tokens: int, window: int, threads: int) -> tuple[float, int]:
    from llama_cpp import Llama

    from flowbox.models.llama_load import keep_weights_out_of_amx

    keep_weights_out_of_amx()  # as flowbox loads every model
    llm = Llama(model_path=path, n_ctx=window, logits_all=True, verbose=False, n_threads=threads)
    ids = llm.tokenize(text.encode("utf-8"))[:tokens]
    nll, scored = 0.0, 0
    for start in range(0, len(ids) - window + 1, window // 2):
        chunk = ids[start:start + window]
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[:len(chunk)], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        for i in range(window // 2 - 1, len(chunk) - 1):
            nll -= logprobs[i, chunk[i + 1]]
            scored += 1
    llm.close()
    return math.exp(nll / scored), scored


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", help="GGUF model files")
    parser.add_argument("--text", default=str(ROOT / "README.md"))
    parser.add_argument("--tokens", type=int, default=4096, help="read at most this many tokens of the text")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    text = Path(args.text).read_text(encoding="utf-8")
    for path in args.files:
        value, scored = perplexity(path, text, tokens=args.tokens, window=args.window, threads=args.threads)
        print(f"{Path(path).name:<48} perplexity {value:7.3f}  ({scored} tokens scored)", flush=True)


if __name__ == "__main__":
    main()
