"""Other businesses' intents and what their customers wrote: how near a message lies to what was asked of
intents like a candidate elsewhere.

A flow's intent has the few examples its bot builder wrote. The judge's training flows (``acceptance``) have,
for every intent, its examples and the messages its customers sent, and many intents recur from business to
business (opening hours, cancelling a booking, a person to talk to). For each of a flow's intents the library
finds the ``NEIGHBOURS`` intents of other flows whose examples lie nearest its own (their centroids' cosine),
and for a message the judge weighs how near it lies to those intents' customers' messages (``MEASURES``,
``Kin.measures``): support the flow's own examples may not give, or its lack, for a message no customer of an
intent like it ever sent. Vectors are in ``intent_space``; the shipped library is read with the built-in
model only, as the judge is.

``scripts/intent_space/train.py`` writes it (``FILE``: the 144 flows' 1,971 intents and 27,598 messages in
``DIMENSIONS`` directions, 3.7 MB) with the shipped encoder and map, and measures each of those flows beside a
library of the other folds' flows only, read by that fold's encoder and map, as a new client's flow is measured
beside flows that are not its own. Measured so, on flows the judge was not fitted on (all / in scope / out of
scope, at ``acceptance.BAR`` and ``FLOOR``): without these measures 0.844 / 0.834 / 0.909, with them 0.846 /
0.835 / 0.915. In all 384 dimensions (11 MB) 0.846 / 0.835 / 0.916, and through the engine at the same bar tuned
dev 0.943 / 0.948 / 0.923 and unseen dev 0.763 / 0.739 / 0.922, against 0.945 / 0.951 / 0.918 and 0.763 / 0.738 /
0.922 in 128: as good, so the smaller is shipped.
Compared first on the same measured rows (from 0.845 / 0.835 / 0.909 there): these five over three neighbours'
messages 0.848 / 0.837 / 0.917, the same over their examples too; the message's nearest
message in the whole library and the neighbours' flows' out-of-scope messages beside them 0.849 / 0.838 / 0.918;
the library of examples and messages cut to 128 dimensions 0.847 / 0.836 / 0.916; how many of the message's words the flow's examples
never use (weighted by how rare each is across flows), 0.845 / 0.835 / 0.909, nothing. Through the engine, the
eval's dev halves: the numbers at ``acceptance.BAR``. A third candidate for the judge, the intent whose kin's
messages lie nearest (which brings the right intent among the candidates for 0.946 of the messages in scope, not
0.922), measured with the library in full 0.847 / 0.836 / 0.915 out of fold and 0.942 / 0.949 / 0.910 on the tuned
dev half: not kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .intents import normalised

FILE = Path(__file__).with_name("other_flows.npz")
NEIGHBOURS = 3
MEASURES = ("kindred_support", "kindred_support_best", "kindred_support_weighted", "kindred_similarity",
            "kindred_top_mean")
# Kept in the messages' first principal directions, not all 384: 3.7 MB rather than 11, which the executable's
# size limit (250 MB) needs; as good as in full (docstring).
DIMENSIONS = 128


def _reduce(vectors: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return normalised((np.asarray(vectors, dtype=np.float32) - mean) @ basis)


def _centroids(examples: list[np.ndarray]) -> np.ndarray:
    """Each intent's centroid (of its example vectors), unit length."""
    return normalised(np.stack([e.mean(0) for e in examples]))


class Library:
    """Intents of other flows: each one's centroid (of its examples) and its customers' messages' vectors,
    intent ``i``'s at ``vectors[starts[i]:starts[i + 1]]``, all in ``DIMENSIONS`` principal directions of
    the messages (``reduce``: less their ``mean``, along ``basis``). (Their examples beside the messages
    measured the same, out of fold: the messages say what the examples do, and more.)"""

    def __init__(self, mean: np.ndarray, basis: np.ndarray, centroids: np.ndarray, vectors: np.ndarray, starts: np.ndarray):
        self.mean, self.basis, self.centroids, self.vectors, self.starts = mean, basis, centroids, vectors, starts

    @classmethod
    def of(cls, examples: list[np.ndarray], messages: list[np.ndarray], dimensions: int = DIMENSIONS) -> Library:
        """From each intent's example vectors and its customers' message vectors (unit rows, in ``intent_space``)."""
        rows = np.concatenate(messages).astype(np.float64)
        mean = rows.mean(0)
        basis = np.linalg.svd(rows - mean, full_matrices=False)[2][:dimensions].T
        mean, basis = mean.astype(np.float32), basis.astype(np.float32)
        centroids = _reduce(_centroids(examples), mean, basis)
        return cls(mean, basis, centroids, _reduce(rows, mean, basis), np.cumsum([0] + [len(m) for m in messages]))

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors of ``intent_space`` (rows, or one) in the library's directions, unit length."""
        return _reduce(vectors, self.mean, self.basis)

    def save(self, path: Path) -> None:
        """Messages stored as 8-bit integers per vector with its own scale (a cosine moves by well under 0.01)."""
        scale = np.abs(self.vectors).max(1, keepdims=True) / 127
        np.savez_compressed(path, mean=self.mean, basis=self.basis.astype(np.float16),
                            centroids=self.centroids.astype(np.float16), starts=self.starts,
                            vectors=np.round(self.vectors / scale).astype(np.int8), scale=scale.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> Library:
        with np.load(path) as stored:
            return cls(stored["mean"], stored["basis"].astype(np.float32), stored["centroids"].astype(np.float32),
                       normalised(stored["vectors"].astype(np.float32) * stored["scale"]), stored["starts"])

    def kin(self, examples: list[np.ndarray]) -> Kin:
        """A flow's intents (each one's example vectors) and the ``NEIGHBOURS`` library intents nearest each
        (by centroid), with their messages."""
        similarity = self.reduce(_centroids(examples)) @ self.centroids.T
        nearest = np.argsort(-similarity, axis=1)[:, :NEIGHBOURS]
        chosen = np.unique(nearest)
        spans = [(self.starts[i], self.starts[i + 1]) for i in chosen]
        vectors = np.concatenate([self.vectors[a:b] for a, b in spans])
        owner = np.concatenate([np.full(b - a, n) for n, (a, b) in enumerate(spans)])
        neighbours = np.searchsorted(chosen, nearest)  # positions among those chosen
        return Kin(self.reduce, vectors, owner, neighbours, np.take_along_axis(similarity, nearest, 1))


class Kin:
    """A flow's intents' nearest library intents: their messages' vectors (``owner``: which of them each is),
    per intent of the flow the positions of its ``NEIGHBOURS`` (nearest first) and their similarity to it,
    and how the library reads a message's vector (``Library.reduce``)."""

    def __init__(self, reduce: Callable[[np.ndarray], np.ndarray], vectors: np.ndarray, owner: np.ndarray,
                 neighbours: np.ndarray, similarity: np.ndarray):
        self.reduce, self.vectors, self.owner, self.neighbours, self.similarity = reduce, vectors, owner, neighbours, similarity
        # per intent of the flow, where its neighbours' messages are among ``vectors`` (padded with one past the end)
        mine = [np.flatnonzero(np.isin(owner, row)) for row in neighbours]
        self.messages = np.full((len(mine), max(len(m) for m in mine)), len(vectors))
        for n, m in enumerate(mine):
            self.messages[n, :len(m)] = m

    def measures(self, vector: np.ndarray) -> np.ndarray:
        """Per intent of the flow, ``MEASURES`` for a message (its unit vector): its cosine to the nearest
        message of the nearest library intent, the best of that over the neighbours, that weighted by their
        similarity, the nearest neighbour's similarity, and the mean cosine of the three of the neighbours'
        messages nearest it."""
        cosines = self.vectors @ self.reduce(vector)
        per = np.full(self.owner.max() + 1, -1.0)
        np.maximum.at(per, self.owner, cosines)
        support = per[self.neighbours]  # (intents, NEIGHBOURS)
        weighted = (support * self.similarity).sum(1) / np.maximum(self.similarity.sum(1), 1e-6)
        top = np.sort(np.append(cosines, -np.inf)[self.messages], axis=1)[:, -3:].mean(1)
        return np.column_stack([support[:, 0], support.max(1), weighted, self.similarity[:, 0], top])


@functools.cache
def shipped() -> Library | None:
    """The library ``train.py`` wrote for the built-in model, or None without it."""
    return Library.load(FILE) if FILE.exists() else None
