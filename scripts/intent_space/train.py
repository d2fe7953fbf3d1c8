"""Learns ``flowbox/messaging/intent_space.npy``: a linear map of the intent matcher's vectors (the built-in
MiniLM as changed by ``encoder.py``, which runs first) under which a customer's message lies nearest its
own intent's examples, and a message the flow does not cover further from all of them (see
``flowbox/messaging/intent_space.py`` for how the matcher uses it).

Data (``flows/``): flows of kinds of business that none of ``scripts/eval``'s flows is (dentists,
plumbers, bookshops, VPNs, zoos, funeral directors, podcast hosts, ...), written for this purpose by
people who never read the eval data or the matcher: each intent's 8 examples as a bot builder writes
them, 14 messages customers would send for it (typos, fragments, long stories, indirect requests, other
words), and per flow 30 messages it does not cover (most of them near misses in the same business's words).
192 flows now; what flowbox ships (the encoder, this map and the judge) was learned from the 144 there were
before the last 48 (a water company to a go-karting track) were written (``unseen_flows.txt``), and these
scripts learn from those 144 (``learned_from``) unless given ``--all-flows``. Learned again from all 192 (all of
it, ``encoder.py`` and its four folds included, takes about two and a half hours on two cores), it was not
better on the eval's tuned dev half (all / out of scope, at the same bar and floor: 0.928 / 0.919 against
0.931 / 0.888; at no bar or floor from 0.15 to 0.35 and 0.35 to 0.6 above 0.931), so it was not shipped.

Objective, per flow: a message's score for an intent is a smooth maximum of its cosines to the
intent's examples (``SHARPNESS``); a softmax over the intents and "none of them" (a bar learned with
the map) at ``SCALE`` is trained with cross-entropy, and an L2 penalty (``PENALTY``) keeps the map near
the identity, so that what MiniLM already knows is kept and only re-weighted. Adam, ``STEPS`` steps,
in numpy (a minute or two, after embedding the texts with the intent encoder: a few minutes, and as
many again for each of the four encoders learned without a fold of the flows).

Then it writes ``flowbox/messaging/other_flows.npz`` (these flows' intents and their customers' messages, read
by the shipped encoder and map: what the judge measures a client's flow beside, ``other_flows``) and learns
``flowbox/messaging/acceptance.json``, the judge of top-level matches (see ``flowbox/messaging/acceptance.py``):
every flow is measured as the matcher measures a new client's flow, read by an encoder and in a map learned
without it (``JUDGE_FOLDS`` encoders, ``encoder.py --fold K``, and as many maps, each from the other folds'
flows), beside the other folds' flows only, with ``FRAGMENTS``
among its out-of-scope messages, and the judge is fitted on every candidate of every message (right or
not); it prints the judge's accuracy on flows it was not fitted on, at ``acceptance.BAR`` and ``FLOOR``.

    python scripts/intent_space/teacher.py --out TEACHER.npz  # what ships: the encoders below learn from it
    python scripts/intent_space/encoder.py --teacher TEACHER.npz  # and with --fold K --out FOLDER/foldK.npz for K in 0..3
    python scripts/intent_space/train.py --encoders FOLDER [--check | --judge] [--cache FOLDER]

``--check`` holds out the flows of fold 0 and prints, on them, the nearest example's accuracy (read by the
encoder learned without them) before and after a map learned without them, and writes nothing.
``--judge`` learns the judge only and leaves the map as it is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flowbox.messaging import other_flows

FLOWS = Path(__file__).parent / "flows"
# The 48 flows written last: what flowbox ships learned nothing from them, so that `scripts/eval/intents.py
# --unseen` (and nearest_confidence.py) can measure it on flows it never saw.
UNSEEN = Path(__file__).with_name("unseen_flows.txt")
# Messages that say nothing a flow could serve (keyboard mashing, laughter, nonsense): the judge also learns
# from them, as out of scope in every flow; the flows' own out-of-scope messages are nearly all requests.
FRAGMENTS = [line for line in (Path(__file__).parent / "fragments.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
PENALTY = 0.0125
SHARPNESS = 30.0
SCALE = 20.0
STEPS = 150
LEARNING_RATE = 0.01


class Flow:
    """One flow's example vectors (rows, with the intent each belongs to) and its messages' vectors
    (with their intent, or ``intents`` for one it does not cover)."""

    def __init__(self, data: dict, vector_of: dict[str, np.ndarray]):
        self.intents = len(data["intents"])
        self.examples = np.stack([vector_of[t] for i in data["intents"] for t in i["examples"]]).astype(np.float64)
        self.example_intent = np.array([n for n, i in enumerate(data["intents"]) for _ in i["examples"]])
        messages = [(t, n) for n, i in enumerate(data["intents"]) for t in i["utterances"]]
        messages += [(t, self.intents) for t in data["out_of_scope"]]
        self.messages = np.stack([vector_of[t] for t, _ in messages]).astype(np.float64)
        self.label = np.array([n for _, n in messages])
        self.member = np.eye(self.intents)[self.example_intent]  # (examples, intents)


def learned_from(include_unseen: bool = False) -> list[dict]:
    """The flows the encoder, the map and the judge learn from, in one order (their folds are ``n %
    JUDGE_FOLDS`` of it): the 144 that what flowbox ships learned from, or with ``include_unseen`` all of them."""
    unseen = set(UNSEEN.read_text().split())
    return [json.loads(p.read_text()) for p in sorted(FLOWS.glob("*.json")) if include_unseen or p.name not in unseen]


def _unit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / norms, norms


def _unit_backward(unit: np.ndarray, norms: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The gradient through x -> x / |x|."""
    return (grad - unit * np.sum(unit * grad, axis=1, keepdims=True)) / norms


def loss_and_gradient(w: np.ndarray, bar: float, flows: list[Flow]) -> tuple[float, np.ndarray, float]:
    """Mean cross-entropy over every flow's messages plus the penalty; gradients for the map and the bar."""
    count = sum(len(f.label) for f in flows)
    total, grad_w, grad_bar = 0.0, np.zeros_like(w), 0.0
    for f in flows:
        examples, example_norms = _unit(f.examples @ w)
        messages, message_norms = _unit(f.messages @ w)
        weights = np.exp(SHARPNESS * (messages @ examples.T - 1))  # (messages, examples), at most 1
        sums = weights @ f.member  # (messages, intents)
        best = np.log(sums + 1e-300) / SHARPNESS + 1  # a smooth maximum of each intent's cosines
        logits = SCALE * np.hstack([best, np.full((len(best), 1), bar)])
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(len(f.label))
        total -= np.log(p[rows, f.label]).sum()
        d_logits = p
        d_logits[rows, f.label] -= 1
        d_logits /= count
        grad_bar += SCALE * d_logits[:, -1].sum()
        d_best = SCALE * d_logits[:, :-1]
        d_similarity = d_best[:, f.example_intent] * weights / sums[:, f.example_intent]
        grad_w += f.messages.T @ _unit_backward(messages, message_norms, d_similarity @ examples)
        grad_w += f.examples.T @ _unit_backward(examples, example_norms, d_similarity.T @ messages)
    off = w - np.eye(len(w))
    return total / count + PENALTY * float(np.sum(off * off)), grad_w + 2 * PENALTY * off, grad_bar


def fit(flows: list[Flow], dim: int, log=print) -> tuple[np.ndarray, float]:
    """The map and the bar, from the identity and 0.5, by Adam."""
    params = [np.eye(dim), np.array(0.5)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    for step in range(1, STEPS + 1):
        loss, grad_w, grad_bar = loss_and_gradient(params[0], float(params[1]), flows)
        for p, m, v, g in zip(params, first, second, (grad_w, np.array(grad_bar))):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= LEARNING_RATE * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
        if step == 1 or step % 50 == 0:
            log(f"step {step}: loss {loss:.4f}")
    return params[0], float(params[1])


def nearest_accuracy(flows: list[Flow], w: np.ndarray) -> tuple[float, float]:
    """(accuracy, bar): the nearest example's intent, or none below the bar, at the best single bar."""
    right, top, inside = [], [], []  # per message: nearest example's intent is its own; that cosine; in scope
    for f in flows:
        examples, _ = _unit(f.examples @ w)
        messages, _ = _unit(f.messages @ w)
        similarity = messages @ examples.T
        right.append(f.example_intent[similarity.argmax(axis=1)] == f.label)
        top.append(similarity.max(axis=1))
        inside.append(f.label < f.intents)
    right, top, inside = np.concatenate(right), np.concatenate(top), np.concatenate(inside)
    bars = np.arange(0.2, 0.9, 0.01)
    scores = [np.mean(np.where(inside, right & (top >= t), top < t)) for t in bars]
    return float(max(scores)), float(bars[int(np.argmax(scores))])


JUDGE_FOLDS = 4
# How many of an intent's examples the judge's flows keep: people write about six (every flow in scripts/eval
# has five to seven), these flows have eight, and the judge learns how near a message lies to a flow's
# examples.
JUDGED_EXAMPLES = 6


def as_written(data: dict) -> dict:
    """A flow as the judge learns from it: ``JUDGED_EXAMPLES`` examples per intent, and ``FRAGMENTS``
    among the messages it does not cover."""
    return {**data, "intents": [{**i, "examples": i["examples"][:JUDGED_EXAMPLES]} for i in data["intents"]],
            "out_of_scope": data["out_of_scope"] + FRAGMENTS}


def messages_of(data: dict) -> list[tuple[str, int]]:
    """A flow's messages and their intents (-1: none of the flow's), in the order every measure of them keeps
    (``judge_rows``, ``spellings_of``): each intent's utterances, then those the flow does not cover."""
    return [(t, n) for n, i in enumerate(data["intents"]) for t in i["utterances"]] + [(t, -1) for t in data["out_of_scope"]]


def judge_rows(data: dict, vector_of: dict[str, np.ndarray], w: np.ndarray, spellings: dict[str, list[str]],
               off_topic_vectors: np.ndarray,
               library: other_flows.Library) -> list[tuple[int, list[list[tuple[int, np.ndarray]]], tuple[int, float]]]:
    """One flow measured as the matcher measures it, in the space of map ``w`` (learned without this
    flow), beside ``library`` (other flows' intents, in the same space): per message (every spelling of
    it, ``spellings``), its intent (-1: none), per spelling the judge's candidates and their measures
    (``acceptance.measures``), and the intent of its nearest example with that cosine (the plain baseline)."""
    from flowbox.messaging import acceptance, off_topic
    from flowbox.messaging.intents import Features, expand
    from flowbox.messaging.intents import train as train_model
    from flowbox.messaging.matcher import LEARNED_MAX

    def space(texts: list[str]) -> np.ndarray:
        return _unit(np.stack([vector_of[t] for t in texts]).astype(np.float64) @ w)[0]

    examples = [t for i in data["intents"] for t in i["examples"]]
    starts = list(np.cumsum([0] + [len(i["examples"]) for i in data["intents"]])[:-1])
    vectors = space(examples)
    features_of = Features(vectors, [expand(t) for t in examples], starts)
    model = train_model(features_of)
    off = _unit(off_topic_vectors @ w)[0]
    off = off[off_topic.uncovered(off, vectors)]
    kin = library.kin([vectors[a:b] for a, b in zip(starts, [*starts[1:], len(vectors)])])
    rows = list(range(len(starts)))
    out = []
    for text, label in messages_of(data):
        judged, nearest = [], None
        for k, spelling in enumerate(spellings[text]):
            vector = space([spelling])[0]
            features = features_of.of(vector, spelling)
            message = acceptance.Message.of(features_of, vector, features, np.minimum(model.confidence(features), LEARNED_MAX),
                                            features_of.outside(vector), off, k > 0, kin)
            judged.append([(r, acceptance.measures(r, rows, message, model))
                           for r in acceptance.candidates(message, rows)])
            if nearest is None:
                nearest = (int(np.argmax(features[:, 0])), float(features[:, 0].max()))
        out.append((label, judged, nearest))
    return out


def library_of(data: list[dict], space) -> other_flows.Library:
    """``other_flows.Library`` of flows ``data``, their texts read by ``space`` (texts to unit vectors in
    intent space): each intent's examples, as written, and its customers' messages."""
    from flowbox.messaging import other_flows

    return other_flows.Library.of([space(i["examples"]) for d in data for i in d["intents"]],
                                  [space(i["utterances"]) for d in data for i in d["intents"]])


def fit_judge(flows: list[list], log=print, fragments: int = 0):
    """The judge (``acceptance.Judge``) from measured flows (``judge_rows``). Prints its accuracy at
    ``acceptance.BAR`` and ``FLOOR`` on flows it was not fitted on (``JUDGE_FOLDS``-fold, by flow) beside,
    on the same messages, the matcher's rules that it replaces and the nearest example at its best single
    bar; the last ``fragments`` messages of each flow (``FRAGMENTS``, which ``judge_rows`` measures last)
    are learned from but reported apart."""
    from flowbox.messaging import acceptance

    def stacked(chosen):
        x = [m for flow in chosen for label, judged, _ in flow for spelling in judged for _, m in spelling]
        y = [r == label for flow in chosen for label, judged, _ in flow for spelling in judged for r, _ in spelling]
        return np.array(x), np.array(y, dtype=float)

    nearest_at = acceptance.MEASURES.index("emb_max")  # the candidate's nearest example's similarity
    in_order = [flow for k in range(JUDGE_FOLDS) for flow in flows[k::JUDGE_FOLDS]]
    labels = np.array([label for flow in in_order for label, _, _ in flow])
    fragment = np.array([n >= len(flow) - fragments for flow in in_order for n in range(len(flow))])
    judged_by = []
    for k in range(JUDGE_FOLDS):
        judge = acceptance.Judge.fit(*stacked([f for n, f in enumerate(flows) if n % JUDGE_FOLDS != k]))
        for flow in flows[k::JUDGE_FOLDS]:
            for _, judged, _ in flow:
                p, row, m = max(((judge.probability(m), r, m) for spelling in judged for r, m in spelling), key=lambda found: found[0])
                judged_by.append(row if acceptance.accepts(p, m[nearest_at]) else -1)
    messages = [m for flow in in_order for m in flow]
    nearest = np.array([n for _, _, n in messages])
    own = ~fragment
    by_bar = {bar: np.where(nearest[:, 1] >= bar, nearest[:, 0], -1) for bar in np.arange(0.2, 0.9, 0.01)}
    bar = max(by_bar, key=lambda b: np.mean(by_bar[b][own] == labels[own]))
    for name, predicted in ((f"judge (bar {acceptance.BAR}, floor {acceptance.FLOOR})", judged_by),
                            ("the rules it replaces", [_by_rules(j) for _, j, _ in messages]),
                            (f"nearest example (bar {bar:.2f})", by_bar[bar])):
        right, inside = np.asarray(predicted) == labels, labels >= 0
        log(f"{name} on flows the judge was not fitted on: {right[own].mean():.3f} (in scope {right[own & inside].mean():.3f}, "
            f"out of scope {right[own & ~inside].mean():.3f}"
            + (f"; fragments turned away {right[fragment].mean():.3f})" if fragments else ")"))
    return acceptance.Judge.fit(*stacked(flows))


def _by_rules(judged: list[list[tuple[int, np.ndarray]]], threshold: float = 0.5) -> int:
    """What the matcher's top-level rules make of a message's measured spellings (the judge's
    candidates), at the default threshold: a spelling near an off-topic phrasing matches nothing
    (``off_topic.decides``); else the first candidate confident enough and in the flow's scope
    (``intents.Model.in_scope``) matches; the most confident spelling's match wins; -1: none."""
    from flowbox.messaging import acceptance, off_topic

    at = {name: i for i, name in enumerate(acceptance.MEASURES)}
    best = (-1.0, -1)
    for spelling in judged:
        m = spelling[0][1]  # the nearest off-topic phrasing and the nearest example are the message's
        if off_topic.decides(m[[at["off_topic"]]], m[at["off_topic"]] - m[at["off_topic_lead"]]) is not None:
            continue
        for row, m in spelling:
            if (m[at["confidence"]] >= threshold and m[at["outside_over_span"]] <= 0
                    and (m[at["meaning_over_scope"]] >= 0 or m[at["spelling_over_scope"]] >= 0)):
                best = max(best, (m[at["confidence"]], row))
                break
    return best[1]


def common_words(flows: list[dict], known) -> dict[str, int]:
    """How often each word (through ``intents.expand``) is used in ``flows``' examples, customers' messages and
    out-of-scope messages, and in the shipped phrasings: what the matcher's ``Speller`` may correct a misspelt
    word to (``intents.CommonWords``). Only words used twice or more; nor a word the model does not know whole
    (``known``) that is one edit from a word used three times as often, as a customer's typo is ("cancle",
    "balnce", "pasword")."""
    from collections import Counter

    from flowbox.messaging import common_phrasings, off_topic
    from flowbox.messaging.intents import edit_distance, expand

    texts = [t for d in flows for t in [*(t for i in d["intents"] for t in i["examples"] + i["utterances"]), *d["out_of_scope"]]]
    counts = Counter(w for t in [*texts, *common_phrasings.TEXTS, *off_topic.TEXTS] for w in expand(t).split() if w.isalpha())
    used = {w: n for w, n in counts.items() if n >= 2}
    by_letter: dict[str, list[str]] = {}
    for w in used:
        by_letter.setdefault(w[0], []).append(w)

    def typo(word: str) -> bool:
        return not known(word) and any(used[o] >= 3 * used[word] and abs(len(o) - len(word)) <= 1
                                       and edit_distance(word, o) == 1 for o in by_letter[word[0]] if o != word)

    return {w: n for w, n in sorted(used.items(), key=lambda item: (-item[1], item[0])) if not typo(w)}


def spellings_of(config, flows: list[dict], written: list[dict] | None = None) -> list[dict[str, list[str]]]:
    """Per flow, each message's spellings as the matcher embeds them: spelt out (``intents.expand``), and again
    per corrected spelling (``intents.Speller``; the words the encoder knows whole are MiniLM's), toward the flow's
    examples and common words: with ``written`` (the flows as in ``flows/``, in the order of ``flows``), those of
    the other folds' flows (``common_words``), as a new client's flow meets words of flows that are not its own;
    without, the shipped ones (``intents.COMMON_WORDS``). With ``written``, the shipped ones are written too,
    from all of it."""
    from flowbox.embeddings import LocalEmbedder
    from flowbox.messaging.intents import COMMON_WORDS, CommonWords, Speller, expand
    from flowbox.models import intent_encoder
    from flowbox.models.files import ensure_model

    spellings = []
    words = LocalEmbedder(ensure_model(config.models_path, intent_encoder.BASE), name="words", n_threads=1)
    try:
        if written is None:
            common = [CommonWords.shipped()] * JUDGE_FOLDS
        else:
            shipped = common_words(written, words.is_word)
            COMMON_WORDS.write_text("".join(f"{word}\t{count}\n" for word, count in shipped.items()))
            print(f"wrote {COMMON_WORDS.name} ({len(shipped)} words)")
            common = [CommonWords(common_words([d for n, d in enumerate(written) if n % JUDGE_FOLDS != k], words.is_word))
                      for k in range(JUDGE_FOLDS)]
        for n, d in enumerate(flows):
            speller = Speller([expand(t) for i in d["intents"] for t in i["examples"]], words.is_word, common[n % JUDGE_FOLDS])
            spellings.append({text: [v or text for v in speller.variants(expand(text))]
                              for text, _ in messages_of(d)})
    finally:
        words.close()
    return spellings


def embed(config, texts: list[str], changes: Path | None = None, cache: Path | None = None) -> np.ndarray:
    """``texts`` as the intent matcher reads them: with the shipped intent encoder, or with the one whose
    changes are in ``changes`` (``encoder.py --fold K``), prepared in a folder of its own. With ``cache``
    (a folder), vectors are kept there per encoder (named by a digest of its changes) and only texts not
    read before are embedded: embedding is most of a run's time."""
    import tempfile

    from flowbox.embeddings import LocalEmbedder
    from flowbox.models import intent_encoder
    from flowbox.models.files import MODELS, ensure_model

    kept = cache / f"{intent_encoder.version(changes or intent_encoder.FILE)}.npz" if cache else None
    known = {}
    if kept and kept.exists():
        with np.load(kept) as stored:
            known = dict(zip(stored["texts"].tolist(), stored["vectors"]))
    if missing := [t for t in dict.fromkeys(texts) if t not in known]:
        with tempfile.TemporaryDirectory() as folder:
            if changes is None:
                path = ensure_model(config.models_path, intent_encoder.MODEL)
            else:
                path = Path(folder) / MODELS[intent_encoder.MODEL].filename
                intent_encoder.prepare(ensure_model(config.models_path, intent_encoder.BASE), path, changes)
            embedder = LocalEmbedder(path, name=intent_encoder.MODEL, n_threads=config.threads)
            try:
                known.update(zip(missing, np.asarray(embedder.embed_sync(missing), dtype=np.float32)))
            finally:
                embedder.close()
        if kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            np.savez(kept, texts=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[t] for t in texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="hold out fold 0's flows and report on them; write nothing")
    parser.add_argument("--judge", action="store_true", help="learn the judge (acceptance.json) only; keep the map")
    parser.add_argument("--encoders", type=Path, required=True,
                        help="a folder with fold0.npz ... fold3.npz, from encoder.py --fold K --out FOLDER/foldK.npz")
    parser.add_argument("--cache", type=Path, help="a folder to keep the texts' vectors in between runs")
    parser.add_argument("--all-flows", action="store_true", help="learn from the unseen flows too (then `--unseen` measures nothing unseen)")
    args = parser.parse_args()
    from flowbox.config import load
    from flowbox.embeddings import intent_model
    from flowbox.messaging import acceptance, intent_space, off_topic, other_flows
    from flowbox.messaging.common_phrasings import MODEL

    config = load()
    if config.embedding_base_url or intent_model(config) != MODEL:
        raise SystemExit(f"the map is learned for the built-in model ({MODEL}); unset the embedding settings")
    folds = [args.encoders / f"fold{k}.npz" for k in range(JUDGE_FOLDS)]
    if missing := [str(f) for f in folds if not f.exists()]:
        raise SystemExit(f"no {', '.join(missing)}: run encoder.py --fold K --out {args.encoders}/foldK.npz first")
    data = learned_from(args.all_flows)
    judged = [as_written(d) for d in data]  # what the judge learns from
    started = time.monotonic()
    spellings = spellings_of(config, judged, data)
    texts = list(dict.fromkeys([*(t for d in data for i in d["intents"] for t in i["examples"] + i["utterances"]),
                                *(t for d in judged for t in d["out_of_scope"]), *off_topic.TEXTS,
                                *(v for flow in spellings for variants in flow.values() for v in variants)]))
    # each fold's flows are measured with the encoder learned without them, as the judge must see a new flow
    vector_of = [dict(zip(texts, embed(config, texts, fold, args.cache))) for fold in folds]
    print(f"embedded {len(texts)} texts {len(folds)} times in {time.monotonic() - started:.0f} s")
    dim = len(vector_of[0][texts[0]])
    if args.check:  # the map, measured in fold 0 (its encoder learned without the flows held out there)
        flows = [Flow(d, vector_of[0]) for d in data]
        test = [f for n, f in enumerate(flows) if n % JUDGE_FOLDS == 0]
        w, bar = fit([f for n, f in enumerate(flows) if n % JUDGE_FOLDS], dim)
        before, after = nearest_accuracy(test, np.eye(dim)), nearest_accuracy(test, w)
        print(f"{len(test)} held-out flows, nearest example: {before[0]:.3f} (bar {before[1]:.2f}) -> {after[0]:.3f} "
              f"(bar {after[1]:.2f}); learned bar {bar:.3f}")
        return
    shipped = dict(zip(texts, embed(config, texts, cache=args.cache)))
    if not args.judge:
        w, bar = fit([Flow(d, shipped) for d in data], dim)
        np.save(intent_space.FILE, w.astype(np.float16))
        intent_space.matrix.cache_clear()
        print(f"wrote {intent_space.FILE.name} ({dim} x {dim}); learned bar {bar:.3f}")
    # what a client's flow is measured beside: these flows, read as the matcher reads (the shipped map, as stored)
    library_of(data, lambda texts: intent_space.mapped(np.stack([shipped[t] for t in texts]))).save(other_flows.FILE)
    print(f"wrote {other_flows.FILE.name}")
    # The judge learns from flows measured as a new client's would be: each with an encoder and in a map
    # learned without it, beside the other folds' flows only.
    measured: list = [None] * len(data)
    for k in range(JUDGE_FOLDS):
        fold_map, _ = fit([Flow(d, vector_of[k]) for n, d in enumerate(data) if n % JUDGE_FOLDS != k], dim)
        off_topic_vectors = np.stack([vector_of[k][t] for t in off_topic.TEXTS]).astype(np.float64)
        library = library_of([d for n, d in enumerate(data) if n % JUDGE_FOLDS != k],
                             lambda texts: _unit(np.stack([vector_of[k][t] for t in texts]).astype(np.float64) @ fold_map)[0])
        for n in range(k, len(data), JUDGE_FOLDS):
            measured[n] = judge_rows(judged[n], vector_of[k], fold_map, spellings[n], off_topic_vectors, library)
    acceptance.FILE.write_text(fit_judge(measured, fragments=len(FRAGMENTS)).dumps() + "\n")
    print(f"wrote {acceptance.FILE.name}")


if __name__ == "__main__":
    main()
