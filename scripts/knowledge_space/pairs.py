"""Learns and measures a second reading for the knowledge base: a cross-encoder that reads a question beside an article.

The search encoder (``encoder.py``) reads a question and an article apart and compares the vectors; this model, the
answer encoder (``flowbox/models/answer_encoder.npz``, which ``flowbox/knowledge/second_reading.py`` runs), reads
them together (``pair_text``: "question [SEP] name, text"), as the intent matcher's pair encoder
(``scripts/intent_space/pairs.py``, whose ``PairEncoder`` this is: MiniLM with low-rank changes and a linear head on
its unit-length mean-pooled vector, so flowbox runs it as any embedding model) reads a message beside an intent's
examples. It starts from that pair encoder.

``learn``: for every question of the help centres (``corpora/``, with ``--more`` also ``more/``), its
``CANDIDATES`` articles nearest by the shipped search encoder (each read as its best chunk, as the knowledge base
indexes it); the article that answers it is put among them when the search missed it. A softmax over their
scores and a learned score for "none of them" (the questions no article answers) is trained with cross-entropy.
With ``--absent``, that share of the answerable questions is asked beside its nearest articles but its own, "none"
the answer: what a knowledge base lacking the article (an agent's few linked entries) asks of the reading.
The shipped encoder: two passes with ``--more`` (46 help centres, 5,508 questions: four of each article's and every
unanswered one a pass, 689 steps, about 28 minutes a pass on two cores), the second from the first with ``--seed 1``
(loss 0.89, then 0.53), then a third from the second with ``--absent 0.5 --seed 2`` (loss 0.62).

``measure``: every question of ``scripts/eval/knowledge.py``'s corpora searched as flowbox searches them, whole and in
the evaluation's small knowledge bases (5 and 20 entries drawn from each corpus, the same draws), its leader read by
the answer encoder where the search is unsure (relevance within ``FIT_BAND``); the leader's relevance then
becomes a logistic of the search's (log-odds) and the answer score, fitted on the tuned corpora's dev half (is the
question answerable), on the whole corpora alone and on whole and small together. Its bias keeps the most answerable
questions above 0.46 while every tuned dev group (whole, 5 entries, 20 entries) keeps at least as many no-answer
questions below it as the search alone (``place_line``). Printed beside the search alone (no-answer questions below
0.46 / answerable above it), dev to choose by, test (and the untuned corpora) reported only:

    fitted on whole and small             search alone               two passes                 and --absent (shipped)
      tuned dev / test                    0.794/0.784 0.897/0.806    0.890/0.817 0.922/0.814    0.860/0.841 0.888/0.829
      untuned dev / test                  0.919/0.846 0.914/0.812    0.946/0.876 0.971/0.831    0.946/0.910 0.943/0.836
      5 entries, tuned dev / test         0.929/0.773 0.920/0.830    0.929/0.837 0.923/0.818    0.931/0.852 0.923/0.830
      20 entries, tuned dev / test        0.813/0.806 0.782/0.800    0.821/0.821 0.800/0.810    0.814/0.850 0.792/0.827
      20 entries, untuned dev / test      0.797/0.840 0.786/0.838    0.795/0.845 0.784/0.865    0.797/0.873 0.802/0.903
    fitted on whole corpora alone
      20 entries, tuned dev                                          0.823/0.778                0.815/0.806

Fitted on whole and small, the encoder learned also from absent articles keeps the most answerable questions above
the line on every tuned dev group (the shipped weights); fitted on whole corpora alone, either keeps fewer in
knowledge bases of 20 entries than the search does. Placed as the search's own line is (85% of whole dev's no-answer
questions below it), every fit put fewer no-answer questions below it in knowledge bases of 20 entries than the
search alone (0.681 to 0.790 against 0.813 on dev). A read costs about 60 ms of CPU. The weights were fitted reading the leaders
within ``FIT_BAND`` (66% of the searches); flowbox reads within ``second_reading.BAND`` (52%), the narrowest band that
lost nothing on dev (the shipped column above is read there; the others within ``FIT_BAND``).

Reading the first three or five results and ranking them again by their fused score plus 0.08 times the answer
score (the best on dev) took MRR@10 from 0.873 to 0.888 (three) and 0.893 (five) on dev, 0.874 to 0.881 and 0.886
on test, with the first pass: three to five times the reading's cost.

    python scripts/knowledge_space/pairs.py learn [--passes N] [--more] [--start NPZ] [--out NPZ] [--per-article N]
    python scripts/knowledge_space/pairs.py measure [--changes NPZ] [--searched JSON]

Needs PyTorch, transformers and MiniLM's wheel in ``FLOWBOX_WHEELHOUSE`` to learn (as ``encoder.py``); ``measure``
needs flowbox only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[2]))
from flowbox.knowledge import second_reading  # noqa: E402
from flowbox.models import answer_encoder, intent_encoder, pair_encoder  # noqa: E402

FILE = answer_encoder.FILE  # the answer encoder: MiniLM's low-rank changes and a head
pair_text, unsure, log_odds, relevance = (second_reading.pair_text, second_reading.unsure, second_reading.log_odds,
                                          second_reading.relevance)  # as flowbox reads
# The leaders read, fitted on and the line placed by: wider than where flowbox reads (``second_reading.BAND``, narrowed
# on dev afterwards to where a reading changed the answer).
FIT_BAND = (0.05, 0.95)


def fitted(relevance: float) -> bool:
    return FIT_BAND[0] <= relevance <= FIT_BAND[1]


def _script(path: Path, name: str):
    """A script of this folder or ``intent_space`` as a module of its own name (both have an ``encoder.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # registered first, for its dataclasses
    spec.loader.exec_module(module)
    return module


search_training = _script(Path(__file__).with_name("encoder.py"), "search_training")  # the help centres, chunked
intent_pairs = _script(Path(__file__).parents[1] / "intent_space" / "pairs.py", "intent_pairs")  # PairEncoder

CANDIDATES = 4  # articles read beside each question
BATCH = 8  # questions a step
LEARNING_RATE = 2e-4
PASSES = 1
PER_ARTICLE = 4  # of an article's questions a pass (and every question no article answers)


def nearest(corpora: list, config) -> list[tuple]:
    """Per question: its corpus, its text, its ``CANDIDATES`` nearest articles (the answer forced in), its answer's place
    among them (``CANDIDATES``: none), each candidate's best chunk as the knowledge base indexes it, and the
    ``CANDIDATES`` nearest articles other than the answer with their best chunks (the question asked of a knowledge
    base without its article)."""
    from flowbox.embeddings import LocalEmbedder
    from flowbox.models import search_encoder
    from flowbox.models.files import ensure_model

    embedder = LocalEmbedder(ensure_model(config.models_path, search_encoder.MODEL), name=search_encoder.MODEL,
                             n_threads=config.threads)
    out = []
    try:
        for corpus in corpora:
            chunks = np.asarray(embedder.embed_sync(corpus.chunks), dtype=np.float32)
            questions = np.asarray(embedder.embed_sync([q for q, _ in corpus.questions]), dtype=np.float32)
            similarity = questions @ chunks.T
            owner = np.array(corpus.owner)
            for (text, label), row in zip(corpus.questions, similarity):
                best_chunk = {}
                for c in np.argsort(-row):
                    best_chunk.setdefault(int(owner[c]), int(c))
                ranked = list(best_chunk)[:CANDIDATES]
                if label < corpus.articles and label not in ranked:
                    ranked[-1] = label
                place = ranked.index(label) if label in ranked else CANDIDATES
                others = [a for a in best_chunk if a != label][:CANDIDATES]
                out.append((corpus, text, ranked, place, [corpus.chunks[best_chunk[a]] for a in ranked],
                            [corpus.chunks[best_chunk[a]] for a in others]))
    finally:
        embedder.close()
    return out


def learn(args) -> None:
    import torch
    from encoder import minilm_dir  # scripts/intent_space/encoder.py

    from flowbox.config import load

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    corpora = search_training.load(search_training.CORPORA) + (search_training.load(search_training.MORE) if args.more else [])
    print(f"{len(corpora)} help centres; finding each question's nearest articles", flush=True)
    items = nearest(corpora, load())
    with tempfile.TemporaryDirectory() as folder:
        model = intent_pairs.PairEncoder(minilm_dir(Path(folder)), args.start)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    for done in range(1, args.passes + 1):
        drawn = []
        for corpus in corpora:  # per article (and the corpus's unanswered questions) a draw of its questions
            mine = [item for item in items if item[0] is corpus]
            by_answer: dict[int, list] = {}
            for item in mine:
                by_answer.setdefault(item[3] if item[3] == CANDIDATES else item[2][item[3]], []).append(item)
            for answer, group in by_answer.items():
                take = len(group) if answer == CANDIDATES else args.per_article  # every unanswered question
                drawn += [group[k] for k in rng.permutation(len(group))[:take]]
        # With --absent, that share of the answerable questions is asked without its article: its nearest others
        # read, "none" the answer (what a small knowledge base asks about an entry it lacks).
        drawn = [(text, others, CANDIDATES) if place < CANDIDATES and rng.random() < args.absent else (text, chunks, place)
                 for _, text, _, place, chunks, others in (drawn[k] for k in rng.permutation(len(drawn)))]
        started, losses = time.monotonic(), []
        for start in range(0, len(drawn), BATCH):
            batch = drawn[start:start + BATCH]
            texts = [pair_text(text, chunk) for text, chunks, _ in batch for chunk in chunks]
            logits = torch.cat([model.scores(texts, True).view(len(batch), CANDIDATES), model.none.expand(len(batch), 1)], 1)
            target = torch.tensor([place for _, _, place in batch], device=model.encoder.device)
            loss = torch.nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) % 50 == 0:
                print(f"  step {len(losses)}/{-(-len(drawn) // BATCH)}: loss {np.mean(losses[-50:]):.4f}, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
            if args.steps and len(losses) >= args.steps:
                break
        model.save(args.out)  # after every pass, so a long run stopped early keeps what it learned
        print(f"pass {done}: loss {np.mean(losses):.4f}, {time.monotonic() - started:.0f} s, wrote {args.out}", flush=True)


# -- measuring: the evaluation's corpora (scripts/eval/knowledge.py), searched as flowbox searches, read again

READ = 1  # results read again: the leader


def _evaluation():
    """``scripts/eval/knowledge.py``: its corpora, halves and metrics."""
    if "evaluation" not in sys.modules:
        sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # its own imports are beside it
        _script(Path(__file__).parents[1] / "eval" / "knowledge.py", "evaluation")
    return sys.modules["evaluation"]


def searched(path: Path) -> list[dict]:
    """Every question of ``scripts/eval/knowledge.py``'s corpora searched as flowbox searches them (the default
    embedding model, hybrid), in each whole corpus and in the evaluation's small knowledge bases drawn from it (its
    draws; there a question about an entry left out has no answer): its half, domain, size (None: whole), answer and
    first ``DEPTH`` results (entry, fused score, relevance, the text read again). Kept in ``path`` (JSON)."""
    import asyncio
    import json
    import random

    if path.exists():
        return json.loads(path.read_text())
    evaluation = _evaluation()

    async def run() -> list[dict]:
        import os

        from flowbox import config as config_mod
        from flowbox import db, orgs
        from flowbox.embeddings import knowledge_model, load_embedder
        from flowbox.knowledge import index as idx
        from flowbox.knowledge import store as kb

        os.environ["FLOWBOX_MODELS_DIR"] = str(evaluation.MODELS_DIR)
        config = config_mod.load(None)
        embedder = load_embedder(config, model=knowledge_model(config))
        store = db.Store(Path(tempfile.mkdtemp(prefix="flowbox-pairs-")) / "kb.db")
        await store.open()
        out = []
        draw = random.Random(0)  # the evaluation's draws
        for domain in evaluation.DOMAINS:
            entries = evaluation.load_entries(domain)
            org = (await orgs.create_org(store, f"eval-{domain}"))["id"]
            items, entry_of = evaluation.items_of_entries(entries, org, evaluation.CHUNK)
            for item, vector in zip(items, await embedder.embed([idx.indexed_text(i) for i in items])):
                item["vector"] = vector
            async with store.write() as tx:
                await tx.run(kb.save_items, embedder.name, embedder.dim, items)
            questions = evaluation.load_questions(domain, {e.id for e in entries})
            scopes = [(None, org, None)]  # (size, org, the entries it holds; None: all)
            scopes += await evaluation.small_knowledge_bases(store, embedder, domain, items, entry_of, draw)
            for size, where, chosen in scopes:
                for question in questions:
                    found = await kb.search(store, embedder, where, question.text, limit=evaluation.DEPTH)
                    expected = question.expected if chosen is None or question.expected in chosen else None
                    out.append({"domain": domain, "split": question.split, "expected": expected, "text": question.text,
                                "untuned": domain in evaluation.UNTUNED, "size": size,
                                "hits": [{"entry": entry_of[h["id"]], "score": h["score"], "relevance": h["relevance"],
                                          "read": idx.indexed_text(h)} for h in found]})
        await store.close()
        embedder.close()
        return out

    out = asyncio.run(run())
    path.write_text(json.dumps(out))
    return out


def answer_scores(texts: list[str], changes: Path) -> np.ndarray:
    """``texts`` (``pair_text``) scored as flowbox would: the answer encoder of ``changes`` prepared as flowbox
    prepares it, read by flowbox's embedder."""
    from flowbox.config import load
    from flowbox.embeddings import LocalEmbedder
    from flowbox.models.files import ensure_model

    config = load()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "answers.gguf"
        answer_encoder.prepare(ensure_model(config.models_path, answer_encoder.BASE), path, changes)
        embedder = LocalEmbedder(path, name=answer_encoder.MODEL, n_threads=config.threads)
        try:
            vectors = np.asarray(embedder.embed_sync(texts), dtype=np.float32)
        finally:
            embedder.close()
    return answer_encoder.score(vectors, changes)


def read_again(questions: list[dict], changes: Path, known: dict[str, float]) -> None:
    """Adds ``answer`` (the answer encoder's score) to each question's first ``READ`` results, where the search is
    unsure (``known``: scores of pairs read before, by the same encoder)."""
    texts = sorted({pair_text(q["text"], h["read"]) for q in questions for h in q["hits"][:READ]
                    if fitted(q["hits"][0]["relevance"])} - set(known), key=len)
    print(f"reading {len(texts)} pairs", flush=True)
    score_of = {**known, **(dict(zip(texts, answer_scores(texts, changes).tolist())) if texts else {})}
    for q in questions:
        for h in q["hits"][:READ]:
            h["answer"] = score_of.get(pair_text(q["text"], h["read"]), 0.0)  # 0: not read (sure)


def measure(args) -> None:
    import json

    questions = searched(args.searched)
    version = intent_encoder.version(args.changes)
    cache = args.searched.with_suffix(f".{version}.json")
    if cache.exists():
        questions = json.loads(cache.read_text())
    else:
        known = {}  # pairs this encoder read in other measurements kept beside this one
        for other in args.searched.parent.glob(f"*.{version}.json"):
            known.update((pair_text(q["text"], h["read"]), h["answer"])
                         for q in json.loads(other.read_text()) for h in q["hits"][:READ]
                         if "answer" in h and fitted(q["hits"][0]["relevance"]))  # others were not read
        read_again(questions, args.changes, known)
        cache.write_text(json.dumps(questions))
    report(questions)


def auc(positive: list[float], negative: list[float]) -> float:
    """How often an answerable question's leader reads above a no-answer question's (ties count half)."""
    p, n = np.array(positive)[:, None], np.array(negative)[None, :]
    return float(np.mean(p > n) + 0.5 * np.mean(p == n))


def place_line(w, shares) -> float:
    """The bias added to ``w`` that keeps the most answerable questions above the line while every tuned dev
    group (``shares(weights)``: per group, the reading's share of no-answer questions below the line beside the
    search's alone) keeps at least as many no-answer questions below it as the search alone does: the line moves
    only where the reading is no worse than the search on either kind of question. (Placed as the search's own is,
    at 85% of whole dev's no-answer questions, it put fewer below in knowledge bases of 20 entries.)"""
    def holds(shift: float) -> bool:
        return all(again >= alone for again, alone in shares((w[0] + shift, w[1], w[2])))

    low, high = -8.0, 8.0  # the shares grow as the bias falls: halve the interval where the rule starts to hold
    if not holds(low):
        raise SystemExit("no line keeps as many no-answer questions below it as the search alone")
    while high - low > 1e-3:
        low, high = ((low + high) / 2, high) if holds((low + high) / 2) else (low, (low + high) / 2)
    return low


def report(questions: list[dict]) -> None:
    """Fits the reading's weights on the tuned corpora's dev half, whole and as the evaluation's small knowledge
    bases (the questions whose leader's relevance is within ``BAND``: was the question answerable there), places the
    line as ``index.RELEVANCE_THRESHOLD`` is placed (on whole corpora) and prints the constants; then "no answer" with
    and without the second reading, dev (chosen there) and, reported only, the tuned corpora's test half and the
    untuned corpora's halves, whole and small."""
    from flowbox.knowledge import index as idx

    evaluation = _evaluation()
    groups = {}
    for size in (None, *evaluation.SUBSET_SIZES):
        for name, half, untuned in (("tuned dev", "dev", False), ("tuned test", "test", False),
                                    ("untuned dev", "dev", True), ("untuned test", "test", True)):
            groups[size, name] = [q for q in questions if q["split"] == half and q["untuned"] == untuned and q.get("size") == size]

    def first(q) -> float:
        return q["hits"][0]["relevance"] if q["hits"] else 0.0

    def read(q, within=fitted) -> bool:
        return bool(q["hits"]) and within(first(q))

    def again(q, weights, within=fitted) -> float:
        return relevance(first(q), q["hits"][0]["answer"], weights) if read(q, within) else first(q)

    def share_below(values: list[float], group: list[dict]) -> float:  # of its no-answer questions, below the line
        return evaluation.no_answer_metrics(values, [q["expected"] is not None for q in group], idx.RELEVANCE_THRESHOLD)[0]

    dev = groups[None, "tuned dev"]
    fits = {"whole corpora": dev, "whole and small": [q for size in (None, *evaluation.SUBSET_SIZES) for q in groups[size, "tuned dev"]]}
    for label, fitted_on in fits.items():
        inside = [q for q in fitted_on if read(q)]
        w = evaluation.logistic(np.array([[log_odds(first(q)), q["hits"][0]["answer"]] for q in inside]),
                                np.array([float(q["expected"] is not None) for q in inside]))
        weights = (float(w[0] + place_line(w, lambda weights: [
            (share_below([again(q, weights) for q in groups[size, "tuned dev"]], groups[size, "tuned dev"]),
             share_below([first(q) for q in groups[size, "tuned dev"]], groups[size, "tuned dev"]))
            for size in (None, *evaluation.SUBSET_SIZES)])), float(w[1]), float(w[2]))
        print(f"fitted on {label}: {len(inside) / len(fitted_on):.0%} read again; WEIGHTS = ({', '.join(f'{v:.3f}' for v in weights)})")
        print(f"  no answer: share of no-answer questions below {idx.RELEVANCE_THRESHOLD} / answerable above it; AUC")
        for (size, name), group in groups.items():
            if not group:
                continue
            answerable = [q["expected"] is not None for q in group]
            row = []
            for how, value in (("search alone", first), ("read again", lambda q: again(q, weights, unsure))):
                values = [value(q) for q in group]
                below, above = evaluation.no_answer_metrics(values, answerable, idx.RELEVANCE_THRESHOLD)
                row.append(f"{how} {below:.3f} / {above:.3f}, "
                           f"{auc([v for v, a in zip(values, answerable) if a], [v for v, a in zip(values, answerable) if not a]):.3f}")
            print(f"    {name + (f', {size} entries' if size else ''):25} " + "   ".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    learning = commands.add_parser("learn", help="learn the knowledge pair encoder")
    learning.add_argument("--passes", type=int, default=PASSES)
    learning.add_argument("--per-article", type=int, default=PER_ARTICLE, help="questions of each article a pass")
    learning.add_argument("--more", action="store_true", help="learn from more/ as well")
    learning.add_argument("--start", type=Path, default=pair_encoder.FILE, help="start from this pair encoder")
    learning.add_argument("--out", type=Path, default=FILE)
    learning.add_argument("--seed", type=int, default=0)
    learning.add_argument("--absent", type=float, default=0.0,
                          help="share of answerable questions asked without their article (none the answer)")
    learning.add_argument("--steps", type=int, help="stop a pass after this many steps (a quick check)")
    measuring = commands.add_parser("measure", help="measure a knowledge pair encoder on the evaluation's corpora")
    measuring.add_argument("--changes", type=Path, default=FILE)
    measuring.add_argument("--searched", type=Path, default=Path(tempfile.gettempdir()) / "flowbox-knowledge-searched.json",
                           help="where the searches are kept between runs")
    args = parser.parse_args()
    learn(args) if args.command == "learn" else measure(args)


if __name__ == "__main__":
    main()
