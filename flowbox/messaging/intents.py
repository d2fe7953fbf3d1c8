"""The learned part of intent matching: features that fuse meaning and spelling, and a small
logistic model per project trained on the project's own examples.

For a message and each intent the features are: the best and the centroid cosine of MiniLM
embeddings to the intent's examples, the same two for character 3-5-gram TF-IDF vectors (typos
and one-word messages share n-grams with the examples even when the embedding of "pay bil" or
"thx" wanders off), and how far each of the two bests lead the best of any other intent.

Which intent a message is about is also judged by a ranker: a ridge-regression classifier over the
examples' embeddings (one linear score per intent), which learns the directions that tell a flow's
intents apart rather than leaning on one nearest example, plus a little of the best n-gram cosine
(``RANKER_SPELLING``: the words a message shares with an intent's examples). Its favourite candidate is tried
first (``matcher.IntentIndex.best``); the logistic confidence and, at the top level, the scope
below still decide whether a candidate is a match.

Training is leave-one-out over the examples: each example, held out of its intent, is a message
whose right intent is known, and every intent of the flow gives one (features, right or not)
row. The logistic model over those rows turns features into the probability that an intent is
the right one for a message it has not seen; that probability is an intent's ``confidence`` and
``intentThreshold`` is the least confidence that counts as a match. The same examples with their
whole intent left out stand for messages the flow does not cover, and ``Model.scope`` (percentiles
of the held-out examples' own best similarities) says how close a message must come to an
intent's examples to be about it at all, and ``Model.span`` how much meaning of its own it may bring
(the part of its embedding its nearest examples cannot express): the calibration comes from the
project's own examples, not from one global cosine.

A message's misspelt words ("ordr", "roming") are also corrected toward the flow's own example
words, and toward words customers of many businesses use ("blackput", "you forogt my bin":
``CommonWords``) (``Speller``); the matcher tries each spelling and keeps the surest match.

Everything here is plain numpy and takes milliseconds; the engine still trains in the background
(``matcher.IntentIndex``) so that no message ever waits for it.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = ("emb_max", "emb_centroid", "char_max", "char_centroid", "emb_lead", "char_lead")
MODEL_VERSION = 5  # 4: ``expand`` reads typed apostrophes and stretched letters; 5: more shorthand
L2 = 1.0
# Total weight of the training rows: right intents, wrong intents, intents of a left-out topic.
SHARES = (0.5, 0.1, 0.4)  # ridge on the standardised weights: a flow has a few hundred rows at most
GRAMS = (3, 4, 5)
# Percentiles of the held-out examples' own best similarities (MiniLM, n-grams) that a message must
# reach for its intent, in one or the other: how close "close enough" is comes from the flow itself.
SCOPE_PERCENTILES = (10, 75)
MIN_HELD_OUT = 30
# A message the flow does not cover often shares an intent's words and topic ("vaccinate my cat",
# "translate hello to german") yet brings meaning of its own: its embedding lies further outside the
# span of its nearest examples than the flow's own held-out examples lie outside theirs. A top-level
# match may lie no further outside than this percentile of them (Model.span; both chosen on the dev
# half of scripts/eval/intents.py, 10-20 neighbours and the 93rd-97th percentile do about as well).
SPAN_NEIGHBOURS = 15
SPAN_PERCENTILE = 95
MAX_SPAN_HELD_OUT = 2000  # held-out examples the percentile is estimated from, at most
MAX_TRAINING_ROWS = 200_000  # held-out examples x intents: bounds training time and memory
RANKER_RIDGE = 0.1  # the ranker's L2 penalty (chosen on the dev half of scripts/eval/intents.py)
# The ranker also counts spelling: this much of an intent's best character n-gram cosine is added to its
# score, so that a sibling whose examples share the message's words ("tracking", "refund") is preferred
# among intents close in meaning. Dev half of scripts/eval/intents.py (twelve flows): 0 0.908, 0.1 0.910,
# 0.15-0.2 0.912, 0.3 0.911, 0.5 0.909, 1.0 0.902.
RANKER_SPELLING = 0.2
# Spelling correction (Speller): a word of at least 3 letters may be 1 edit off, of 6 or more 2; a message is tried
# in at most MAX_SPELLINGS spellings. A three-letter word may lack or double a letter, or swap two, but not have one
# replaced ("cer" could be "car", "cat" or "ear"). With one typo in each of the tuned flows' dev-half messages (see
# COMMON_EDITS): from 4 letters, replaced from 5, 0.867 right; replaced from 4, 0.882; and from 3 as here, 0.887. The
# dev halves did not move (tuned 0.946 / 0.952 / 0.918, unseen 0.764 / 0.740 / 0.919). The judge was learned with
# the bounds before (from 4, replaced from 5); learned again with these it was no better (tuned dev 0.944 / 0.951 /
# 0.914, unseen dev 0.764 / 0.740 / 0.921, out of fold 0.846 / 0.835 / 0.912 against 0.846 / 0.836 / 0.914).
# Two edits from 5 letters ("cacle" for "cancel"), once typos were read corrected only (matcher.IntentIndex._read): with
# one typo in every tuned dev message 0.910 / 0.917 / 0.880 -> 0.908 / 0.917 / 0.864, more words turned into others.
SPELLING = ((3, 1), (6, 2))
SUBSTITUTION_FROM = 4
MAX_SPELLINGS = 4
# A misspelt word the flow's examples lack may be a word customers of other businesses use (``CommonWords``), one
# edit off: with the tuned flows' dev-half messages given one typo each (a letter dropped, doubled, swapped or
# replaced by its neighbour on the keyboard, seeded), 0.838 of them were right toward the examples' words alone and
# 0.868 with these, as written 0.935 either way; the dev halves themselves (all / in scope / out of scope), tuned 0.946 /
# 0.952 / 0.918 -> 0.947 / 0.953 / 0.918, unseen 0.763 / 0.738 / 0.922 -> 0.763 / 0.739 / 0.922, and with the judge
# learned again from these spellings (as shipped) 0.946 / 0.952 / 0.918 and 0.764 / 0.740 / 0.919, with typos 0.867.
# Two edits off read keyboard mashing as words ("qwerty" as "query"): tuned dev 0.946 / 0.953 / 0.914.
COMMON_EDITS = 1
COMMON_CANDIDATES = 2  # common words a misspelt word may be, at most (``Speller.candidates``)
COMMON_WORDS = Path(__file__).with_name("common_words.tsv")  # written by scripts/intent_space/train.py
# English words (SCOWL's British and American lists as Debian ships them, lower case, without apostrophes; their notice:
# english_words.COPYRIGHT): which misspelt words are words after all ("scarves", "abort", "snowing"), though neither the
# flow, the common words nor the model know them whole (``Speller.spellings``).
ENGLISH_WORDS = Path(__file__).with_name("english_words.txt.gz")
MAX_SPELLED = 8  # words of a message looked up at most (a lookup is well under a millisecond)
# A word of a message that neither the flow's examples nor the embedding model know may be the initials of three or four
# words the examples use together ("ncb" for "no claims bonus", "pcn" for "penalty charge notice"): the Speller tries it
# spelt out (``acronyms``), when only one run of the examples' words, none of them one of ``ACRONYM_GLUE``, has those
# initials. Two letters are too short to tell ("tv" would be "thanks very"): the one customers write most, "dd", is
# shorthand (``SHORTHAND``).
ACRONYM_WORDS = (3, 4)
ACRONYM_GLUE = frozenset(
    "a an and are as at be but by can do does for from had has have how i if in is it its me my not of on or our so "
    "than that the their them then there these they this to was we were what when where which who why will with would "
    "you your am up out off get got want need please".split())
# Chat shorthand spelled out before matching; both sides (examples and messages) go through it.
SHORTHAND = {
    "thx": "thanks", "thnx": "thanks", "tnx": "thanks", "thks": "thanks", "ty": "thank you", "tyvm": "thank you very much",
    "cya": "see you", "bb": "bye bye", "u": "you", "ur": "your", "r": "are", "pls": "please", "plz": "please",
    "y": "yes", "n": "no", "yep": "yes", "yup": "yes", "ya": "yes", "nah": "no", "nope": "no", "gm": "good morning",
    "gn": "good night", "wanna": "want to", "gonna": "going to", "gotta": "got to", "im": "i am", "idk": "i do not know",
    "cant": "can not", "dont": "do not", "doesnt": "does not", "isnt": "is not", "wont": "will not", "whats": "what is",
    "wheres": "where is", "hows": "how is", "msg": "message", "acct": "account", "tmrw": "tomorrow", "2day": "today",
    "asap": "as soon as possible", "dd": "direct debit", "btw": "by the way", "pic": "picture", "info": "information",
    "bal": "balance", "acc": "account", "appt": "appointment", "dl": "download", "pw": "password", "pwd": "password",
    "num": "number", "txt": "text", "abt": "about", "thru": "through", "ppl": "people", "coz": "because", "cuz": "because",
    "b4": "before", "tmr": "tomorrow", "tmw": "tomorrow", "2moro": "tomorrow", "hrs": "hours", "mins": "minutes",
    "pmt": "payment", "amt": "amount", "deets": "details", "addy": "address", "bday": "birthday", "nvm": "never mind",
    "gtg": "got to go", "g2g": "got to go", "tysm": "thank you so much", "thanx": "thanks", "tq": "thank you",
    "thanku": "thank you", "thankyou": "thank you", "thnks": "thanks", "wat": "what", "wats": "what is", "wot": "what",
    "wots": "what is", "wht": "what", "cos": "because", "plss": "please", "plse": "please", "pleasee": "please",
    "kk": "ok", "rn": "right now", "sry": "sorry", "srry": "sorry", "wud": "would", "cud": "could",
    "shud": "should", "wen": "when", "whn": "when", "tho": "though", "gud": "good", "nite": "night", "tonite": "tonight",
    "gr8": "great", "l8r": "later",
}

# Words that only lead into a request, dropped from the start of a message before it is matched at the top level
# (``without_preamble``): "forget that, i need to talk about my rent arrears first" is about rent arrears, and read
# whole it came too far from the examples. Written as ``expand`` leaves them ("btw" is "by the way").
PREAMBLES = ("forget that", "forget it", "never mind that", "actually", "also", "and also", "oh and", "one more thing",
             "one other thing", "before that", "by the way", "anyway", "wait", "hold on", "hang on")
PREAMBLE_LEAVES = 3  # words a message keeps at least
_PREAMBLE_WORDS = [p.split() for p in PREAMBLES]


def without_preamble(text: str) -> str:
    """``text`` (through ``expand``) without the ``PREAMBLES`` it starts with, as long as ``PREAMBLE_LEAVES``
    words are left."""
    words = text.split()
    while lead := next((p for p in _PREAMBLE_WORDS if words[:len(p)] == p and len(words) - len(p) >= PREAMBLE_LEAVES), None):
        words = words[len(lead):]
    return " ".join(words)


# Apostrophes as phones and word processors type them ("I’m", "don’t"): read as "'", so that "don’t" is "dont", as
# "don't" is, and not "don t".
APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u2018\u02bc\u0060\u00b4\u2032"})
# A letter typed three times or more ("pleaseeee", "billll", "hiii") is read as typed twice: no English word has
# three in a row, and the speller then reaches the word ("pleasee", "bill", "hii") as from any other typo.
STRETCHED = re.compile(r"([a-z])\1{2,}")


def expand(text: str) -> str:
    """Lower case, punctuation dropped, stretched letters cut to two, chat shorthand spelled out."""
    text = STRETCHED.sub(r"\1\1", text.lower().translate(APOSTROPHES).replace("'", ""))
    return " ".join(SHORTHAND.get(w, w) for w in re.sub(r"[^\w\s]", " ", text).split())


class CharGrams:
    """Character n-gram TF-IDF (words padded with spaces, as "char_wb" vectorizers do) fitted on
    a flow's examples. Vectors are sparse ({column: weight}, L2-normalised, so a dot product is a
    cosine) and searched through an inverted index: memory grows with the examples' text, not
    with examples x vocabulary."""

    def __init__(self, texts: list[str]):
        counts = [self._grams(t) for t in texts]
        self.vocabulary: dict[str, int] = {}
        for grams in counts:
            for gram in grams:
                self.vocabulary.setdefault(gram, len(self.vocabulary))
        df = np.zeros(len(self.vocabulary))
        for grams in counts:
            for gram in grams:
                df[self.vocabulary[gram]] += 1
        self.idf = np.log((1 + len(texts)) / (1 + df)) + 1
        self.rows = [self._vector(g) for g in counts]

    @staticmethod
    def _grams(text: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for word in text.split():
            padded = f" {word} "
            for n in GRAMS:
                for i in range(max(1, len(padded) - n + 1)):
                    gram = padded[i:i + n]
                    out[gram] = out.get(gram, 0) + 1
        return out

    def _vector(self, grams: dict[str, int]) -> dict[int, float]:
        vector = {}
        for gram, count in grams.items():
            column = self.vocabulary.get(gram)
            if column is not None:
                vector[column] = (1 + np.log(count)) * self.idf[column]
        norm = float(np.sqrt(sum(v * v for v in vector.values())))
        return {k: v / norm for k, v in vector.items()} if norm else {}

    def vector(self, text: str) -> dict[int, float]:
        return self._vector(self._grams(text))


class Speller:
    """Spelling correction of a message's words toward the flow's own example words ("ordr pizza",
    "enable roming", "apointment"): a misspelt word shares few n-grams with the right one, and
    MiniLM, which spells an unknown word out in pieces, loses its meaning altogether.

    A word is taken for a misspelling only when it is neither a word of the examples nor one the
    embedding model knows whole (``known``: "car", "gym" and "hotel" stay as they are); without
    ``known`` nothing is corrected. Its candidates are the examples' words within ``SPELLING``
    edits (adjacent swaps count one; see ``SUBSTITUTION_FROM``) that start with the same letter,
    as nearly all typos do; every candidate at the least distance is kept. With ``common`` (the
    words customers of many businesses use: ``CommonWords``), a word among them is not misspelt
    ("klarna", "pilates"), and the nearest of them are candidates too, after the examples' words.
    Candidates are found through their deletions (symmetric delete): a lookup costs a few dozen set
    probes, whatever the size of the flow."""

    def __init__(self, texts: list[str], known: Callable[[str], bool | None] | None,
                 common: CommonWords | None = None, own: list[str] | None = None, english: frozenset[str] = frozenset()):
        self.known = known
        self.english = english
        self.words = {w for t in texts for w in t.split()}
        self.acronyms = acronyms(texts if own is None else own)  # from the flow's own examples (``own``) where given
        self.common = common
        self.longest = max([*map(len, self.words), common.longest if common else 0])  # the longest a candidate can be
        self.deletions = _deletion_index(self.words)

    @staticmethod
    def budget(word: str) -> int:
        return next((edits for length, edits in reversed(SPELLING) if len(word) >= length), 0)

    def misspelt(self, word: str) -> bool:
        """Whether ``word`` may be a misspelling (neither the flow's examples, the common words nor the model know it)."""
        edits = self.budget(word)
        return bool(edits and len(word) <= self.longest + edits and word not in self.words and word.isalpha()
                    and (self.common is None or word not in self.common.counts)
                    and self.known is not None and self.known(word) is False)

    def candidates(self, word: str) -> list[str]:
        """The words nearest to ``word`` (a ``misspelt`` one): the examples' at the least distance, then up to
        ``COMMON_CANDIDATES`` common words (``CommonWords``) no farther and at most ``COMMON_EDITS`` off, the
        most used first."""
        substitution = 1 if len(word) >= SUBSTITUTION_FROM else 2

        def near(index: dict[str, set[str]], edits: int) -> list[tuple[int, str]]:
            found = {c for v in deletions(word, edits) for c in index.get(v, ()) if c[0] == word[0]}
            return [(d, c) for c in found if (d := edit_distance(word, c, substitution)) <= edits]

        own = near(self.deletions, self.budget(word))
        least = min((d for d, _ in own), default=None)
        out = sorted(c for d, c in own if d == least)
        if self.common is not None:
            common = sorted((d, -self.common.counts[c], c) for d, c in near(self.common.deletions, min(COMMON_EDITS, self.budget(word)))
                            if c not in self.words)
            reach = least if least is not None else min((d for d, _, _ in common), default=0)
            out += [c for d, _, c in common if d <= reach][:COMMON_CANDIDATES]
        return out

    def _options(self, words: list[str]) -> list[list[str] | None]:
        """For each of ``words``: what it may be spelt out as (an acronym's words), or the words nearest to it where
        it is ``misspelt`` (possibly none); None where it stays as it is."""
        # a bounded cost on the event loop: the first MAX_SPELLED words that could be misspelt
        looked = 0
        options: list[list[str] | None] = []
        for word in words:
            if word in self.acronyms and word not in self.words and self.known is not None and self.known(word) is False:
                options.append([self.acronyms[word]])
            elif looked < MAX_SPELLED and self.misspelt(word):
                looked += 1
                options.append(self.candidates(word))
            else:
                options.append(None)
        return options

    def spellings(self, text: str) -> tuple[list[str], bool]:
        """``text`` (through ``expand``) first, then its corrections: every misspelt word replaced by its first
        candidate, then by its second (or its only one), ... ``MAX_SPELLINGS`` in all; and whether the words
        corrected are all typos: none of them an English word (``english``), which the embedding model spells out
        in pieces and reads as nothing, rather than words it does not know whole ("scarves", "abort") and still
        reads in part. Without the English words (``english`` empty), every corrected word counts as a typo."""
        words = text.split()
        options = self._options(words)
        corrected = [word for word, option in zip(words, options) if option]
        out = [text]
        for k in range(max((len(o) for o in options if o), default=0)):
            out.append(" ".join(o[min(k, len(o) - 1)] if o else w for w, o in zip(words, options)))
        return out[:MAX_SPELLINGS], bool(corrected) and not any(word in self.english for word in corrected)

    def variants(self, text: str) -> list[str]:
        """``text`` and its corrections (``spellings``)."""
        return self.spellings(text)[0]


def acronyms(texts: Iterable[str]) -> dict[str, str]:
    """{initials: the words} for each run of ``ACRONYM_WORDS`` words of ``texts`` (through ``expand``, none of them one
    of ``ACRONYM_GLUE``) that no other run shares its initials with."""
    runs: dict[str, set[str]] = {}
    for text in texts:
        words = text.split()
        for size in range(ACRONYM_WORDS[0], ACRONYM_WORDS[1] + 1):
            for start in range(len(words) - size + 1):
                run = words[start:start + size]
                if all(w.isalpha() and w not in ACRONYM_GLUE for w in run):
                    runs.setdefault("".join(w[0] for w in run), set()).add(" ".join(run))
    return {initials: next(iter(found)) for initials, found in runs.items() if len(found) == 1}


def deletion_index(words: Iterable[str], edits: Callable[[str], int]) -> dict[str, set[str]]:
    """Each string reachable from a word by deleting up to ``edits(word)`` letters, and the words it comes from:
    symmetric delete finds a pair within d edits through a common string of d deletions at most."""
    index: dict[str, set[str]] = {}
    for word in words:
        for variant in deletions(word, edits(word)):
            index.setdefault(variant, set()).add(word)
    return index


def _deletion_index(words: Iterable[str], longest: int = max(edits for _, edits in SPELLING)) -> dict[str, set[str]]:
    """``deletion_index`` with as many deletions as the edits a message word within reach may have (``SPELLING``),
    ``longest`` at most."""
    def reach(word: str) -> int:
        return min(max((e for length, e in SPELLING if len(word) + e >= length), default=0) if word.isalpha() else 0, longest)

    return deletion_index(words, reach)


class CommonWords:
    """Words customers write to businesses of every kind, with how often (``COMMON_WORDS``): what a misspelt
    word the flow's examples lack may be ("blackput", "chers", "you forogt my bin")."""

    def __init__(self, counts: dict[str, int]):
        self.counts = counts
        self.longest = max(map(len, counts), default=0)
        self.deletions = _deletion_index(counts, COMMON_EDITS)

    @classmethod
    @functools.cache
    def shipped(cls) -> CommonWords | None:
        try:
            lines = COMMON_WORDS.read_text().splitlines()
        except FileNotFoundError:
            return None
        return cls({word: int(count) for word, count in (line.split("\t") for line in lines if line)})


@functools.cache
def english_words() -> frozenset[str]:
    """The English words (``ENGLISH_WORDS``); none where the file is missing."""
    try:
        return frozenset(gzip.decompress(ENGLISH_WORDS.read_bytes()).decode().split())
    except FileNotFoundError:
        return frozenset()


def deletions(word: str, edits: int) -> set[str]:
    """``word`` with up to ``edits`` letters deleted."""
    out, layer = {word}, {word}
    for _ in range(edits):
        layer = {w[:i] + w[i + 1:] for w in layer for i in range(len(w))}
        out |= layer
    return out


def edit_distance(a: str, b: str, substitution: int = 1) -> int:
    """Insertions, deletions, substitutions and swaps of adjacent letters (optimal string alignment)."""
    previous2, previous = [], list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + substitution * (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], previous2[j - 2] + 1)
        previous2, previous = previous, row
    return previous[-1]


class SparseRows:
    """Rows of sparse vectors, searched by column: ``dot(v)`` is every row's dot product with v."""

    def __init__(self, rows: list[dict[int, float]]):
        self.n = len(rows)
        postings: dict[int, tuple[list[int], list[float]]] = {}
        for r, row in enumerate(rows):
            for column, value in row.items():
                entry = postings.setdefault(column, ([], []))
                entry[0].append(r)
                entry[1].append(value)
        self.postings = {c: (np.asarray(ix), np.asarray(vs)) for c, (ix, vs) in postings.items()}

    def dot(self, vector: dict[int, float]) -> np.ndarray:
        hits = [(self.postings[c], w) for c, w in vector.items() if c in self.postings]
        if not hits:
            return np.zeros(self.n)
        index = np.concatenate([ix for (ix, _), _ in hits])
        values = np.concatenate([vs * w for (_, vs), w in hits])
        return np.bincount(index, weights=values, minlength=self.n)


def _sum_rows(rows: list[dict[int, float]]) -> dict[int, float]:
    out: dict[int, float] = {}
    for row in rows:
        for column, value in row.items():
            out[column] = out.get(column, 0.0) + value
    return out


def normalised(rows: np.ndarray) -> np.ndarray:
    """Rows (or one vector) at unit length; a zero row stays zero."""
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms == 0, 1, norms)


def _stack(emb_max, emb_centroid, char_max, char_centroid, emb_lead, char_lead) -> np.ndarray:
    """The feature rows (last axis: ``FEATURES``)."""
    return np.stack([emb_max, emb_centroid, char_max, char_centroid, emb_lead, char_lead], axis=-1)


def _lead(best: np.ndarray) -> np.ndarray:
    """Per intent (last axis): its score minus the best score of any other intent."""
    if best.shape[-1] < 2:
        return np.zeros_like(best)
    order = np.sort(best, axis=-1)
    first, second = order[..., -1:], order[..., -2:-1]
    return best - np.where(best >= first, second, first)


def _ranker(vectors: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression from an example's embedding to its intent's one-hot row: (weights of shape
    (dim, intents), bias). Closed form on centred vectors; the rows are grouped by intent, so the
    cross-product with the one-hot targets is a per-intent sum (no examples x intents matrix)."""
    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    gram = centred.T @ centred + RANKER_RIDGE * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, np.add.reduceat(centred, starts, axis=0).T)
    bias = counts / len(x) - mean @ weights
    return weights.astype(np.float32), bias.astype(np.float32)


class Features:
    """One flow's examples (rows grouped by intent, ``starts`` where each intent's rows begin;
    ``texts`` already through ``expand``) and the features of a message against every intent."""

    def __init__(self, vectors: np.ndarray, texts: list[str], starts: list[int]):
        self.vectors, self.starts = vectors, np.asarray(starts)
        self.counts = np.diff(np.append(self.starts, len(vectors)))
        self.owner = np.repeat(np.arange(len(starts)), self.counts)
        self.grams = CharGrams(texts)
        self.char_rows = SparseRows(self.grams.rows)
        spans = np.append(self.starts, len(texts))
        sums = [_sum_rows(self.grams.rows[a:b]) for a, b in zip(spans[:-1], spans[1:])]
        self.char_sums = SparseRows(sums)
        self.char_sum_norms = np.array([np.sqrt(sum(v * v for v in s.values())) or 1.0 for s in sums])
        self.emb_sums = np.add.reduceat(vectors, self.starts, axis=0)
        self.emb_centroids = normalised(self.emb_sums)
        self.ranker = _ranker(vectors, self.starts, self.counts)

    def ranking(self, vector: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The ranker's score of every intent for a message's embedding and its features (``of``;
        higher: more likely): the ridge classifier's, plus ``RANKER_SPELLING`` of the best n-gram cosine."""
        weights, bias = self.ranker
        return vector @ weights + bias + RANKER_SPELLING * features[:, FEATURES.index("char_max")]

    def of(self, vector: np.ndarray, text: str) -> np.ndarray:
        """(intents, features) for one message (``text`` through ``expand``)."""
        grams = self.grams.vector(text)
        emb_max = np.maximum.reduceat(self.vectors @ vector, self.starts)
        char_max = np.maximum.reduceat(self.char_rows.dot(grams), self.starts)
        char_centroid = self.char_sums.dot(grams) / self.char_sum_norms
        return _stack(emb_max, self.emb_centroids @ vector, char_max, char_centroid, _lead(emb_max), _lead(char_max))

    def outside(self, vector: np.ndarray, exclude: int | None = None) -> float:
        """How much of a message's meaning lies outside what its ``SPAN_NEIGHBOURS`` nearest examples
        (without example ``exclude``) can express together: the length of the part of its (unit)
        embedding that is orthogonal to their span, from 0 (none) to 1 (all)."""
        similarity = self.vectors @ vector
        if exclude is not None:
            similarity[exclude] = -np.inf
        k = min(SPAN_NEIGHBOURS, len(similarity) - (exclude is not None))
        nearest = np.argpartition(-similarity, k - 1)[:k]
        basis, _ = np.linalg.qr(self.vectors[nearest].T)
        return float(np.linalg.norm(vector - basis @ (basis.T @ vector)))

    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, labels, left-out-topic rows): examples held out of their intent, each against
        every intent (at most ``MAX_TRAINING_ROWS`` rows: a big flow holds out an even spread of its
        examples); an intent's only example is not held out (nothing would be left to match)."""
        keep = np.flatnonzero(self.counts[self.owner] > 1)
        limit = max(MIN_HELD_OUT, MAX_TRAINING_ROWS // len(self.starts))
        if len(keep) > limit:
            keep = keep[np.linspace(0, len(keep) - 1, limit).astype(int)]
        own = self.owner[keep]
        at = np.arange(len(keep))
        emb = self.vectors[keep] @ self.vectors.T
        emb[at, keep] = -np.inf
        emb_max = np.maximum.reduceat(emb, self.starts, axis=1)
        emb_centroid = self.vectors[keep] @ self.emb_centroids.T
        rest = self.emb_sums[own] - self.vectors[keep]  # the intent without the held-out example
        emb_centroid[at, own] = np.einsum("ij,ij->i", normalised(rest), self.vectors[keep])
        char = np.stack([self.char_rows.dot(self.grams.rows[i]) for i in keep]).astype(np.float32)
        char[at, keep] = -np.inf
        char_max = np.maximum.reduceat(char, self.starts, axis=1)
        sum_dots = np.stack([self.char_sums.dot(self.grams.rows[i]) for i in keep])
        char_centroid = sum_dots / self.char_sum_norms
        self_norm = np.array([1.0 if self.grams.rows[i] else 0.0 for i in keep])
        own_dot = sum_dots[at, own] - self_norm  # (sum - x) . x, with |x| = 1
        own_norm = np.sqrt(np.maximum(self.char_sum_norms[own] ** 2 - 2 * sum_dots[at, own] + self_norm, 1e-12))
        char_centroid[at, own] = own_dot / own_norm
        x = _stack(emb_max, emb_centroid, char_max, char_centroid, _lead(emb_max), _lead(char_max))
        y = np.zeros(emb_max.shape)
        y[at, own] = 1
        # The same examples with their whole intent left out stand for messages the flow does not
        # cover: every remaining intent is wrong for them, however close it comes.
        outside = np.ones(emb_max.shape, dtype=bool)
        outside[at, own] = False
        emb_out, char_out = emb_max.copy(), char_max.copy()
        emb_out[at, own] = char_out[at, own] = -np.inf
        x_out = _stack(emb_max, emb_centroid, char_max, char_centroid, _lead(emb_out), _lead(char_out))
        return (x.reshape(-1, len(FEATURES)), y.reshape(-1), x_out[outside])


@dataclass
class Model:
    """Logistic regression over standardised features, and the flow's scope: the least best
    similarity (MiniLM, n-grams) an intent needs to be a message's topic at all, and how far
    outside its nearest examples' span a message may lie (``SPAN_PERCENTILE``)."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    scope: tuple[float, float]
    span: float

    def confidence(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return 1 / (1 + np.exp(-np.clip(z, -30, 30)))

    def in_scope(self, features: np.ndarray, outside: float) -> bool:
        """Whether one intent's features (a row of ``Features.of``) are close enough to be its topic,
        for a message this far outside its nearest examples (``Features.outside``)."""
        return bool((features[0] >= self.scope[0] or features[2] >= self.scope[1]) and outside <= self.span)

    def dumps(self) -> str:
        return json.dumps({"version": MODEL_VERSION, "features": FEATURES, "weights": self.weights.tolist(), "bias": self.bias,
                           "mean": self.mean.tolist(), "scale": self.scale.tolist(), "scope": list(self.scope),
                           "span": self.span})

    @classmethod
    def loads(cls, text: str) -> Model | None:
        """None for a model stored by another version (it is trained again)."""
        data = json.loads(text)
        if data.get("version") != MODEL_VERSION or tuple(data.get("features", ())) != FEATURES:
            return None
        return cls(np.asarray(data["weights"]), float(data["bias"]), np.asarray(data["mean"]), np.asarray(data["scale"]),
                   (float(data["scope"][0]), float(data["scope"][1])), float(data["span"]))


def train(features: Features) -> Model | None:
    """Newton's method on the L2-regularised log loss, each kind of row weighted by ``SHARES``
    in total (one right intent per held-out example against many wrong ones). None when the
    flow has fewer than ``MIN_HELD_OUT`` examples to hold out: a model learned from a handful
    would accept nearly anything; such a flow keeps the plain cosine match."""
    x, y, x_out = features.leave_one_out()
    if y.sum() < MIN_HELD_OUT:
        return None
    right = x[y == 1]
    scope = (float(np.percentile(right[:, 0], SCOPE_PERCENTILES[0])), float(np.percentile(right[:, 2], SCOPE_PERCENTILES[1])))
    held_out = np.unique(np.linspace(0, len(features.vectors) - 1, min(len(features.vectors), MAX_SPAN_HELD_OUT)).astype(int))
    span = float(np.percentile([features.outside(features.vectors[i], exclude=i) for i in held_out], SPAN_PERCENTILE))
    x = np.vstack([x, x_out])
    y = np.append(y, np.zeros(len(x_out)))
    group = np.append(np.where(y[:len(y) - len(x_out)] == 1, 0, 1), np.full(len(x_out), 2))
    shares = np.array(SHARES) / np.bincount(group, minlength=3).clip(1)
    weights, bias, mean, scale = fit_logistic(x, y, L2, shares[group] * len(y))
    return Model(weights, bias, mean, scale, scope, span)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float,
                 weight: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Logistic regression over standardised features by Newton's method on the L2-regularised
    (bias aside) log loss, each row weighted by ``weight`` (1 by default): (weights, bias, mean, scale)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale < 1e-6, 1.0, scale)
    xs = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    weight = np.ones(len(y)) if weight is None else weight
    w = np.zeros(xs.shape[1])
    ridge = np.full(xs.shape[1], l2)
    ridge[-1] = 0
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(xs @ w, -30, 30)))
        gradient = xs.T @ (weight * (p - y)) + ridge * w
        hessian = (xs * (weight * p * (1 - p))[:, None]).T @ xs + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w[:-1], float(w[-1]), mean, scale
