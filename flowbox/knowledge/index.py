"""The search index beside ``knowledge_items``: vectors (sqlite-vec) and BM25 (FTS5).

Every item ``n`` has, in index version ``v``:

- ``knowledge_vec_v<v>``: a sqlite-vec ``vec0`` table, ``float[dim]``, cosine distance,
  partitioned by org: exact KNN, used where a search's scope is small enough to scan.
- ``knowledge_bits_v<v>``: the vector quantized to one bit per dimension
  (``vec_quantize_binary``), clustered by org: the first stage of the two-stage search.
- ``knowledge_vectors_v<v>``: the float32 vector keyed by ``n``, for exact rescoring.

plus its row in its org's FTS5 table (``fts_table``). The version changes only when ``reembed`` builds an index
for a new embedding model or text format; ``knowledge_meta`` names the model, dimension, version
and text format in use.

Two-stage search on large scopes: hamming distance over an org's bits (48 bytes an item at 384
dimensions) picks ``CANDIDATES`` items, rescored exactly with their float vectors. The bits are
scanned with numpy from a per-process copy that an org's ``generation`` (bumped in every write
transaction that touches the org) keeps current. (sqlite-vec's own KNN pays ~0.1 ms per result
row, so a vec0 ``bit[]`` table cannot return hundreds of candidates in time, and its exact
float scan takes ~70 ms at 100,000 vectors.)

Everything here is synchronous on a plain sqlite3 connection: callers run it on the writer
(``Tx.run``, inside the item's own transaction) or on a reader thread.
"""

from __future__ import annotations

import collections
import hashlib
import math
import re
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import error
from ..models.files import model_of
from .chunking import first_heading

# Ranking and relevance see three features of a candidate: its cosine, its coverage (the share of the
# query's words it contains) and its BM25 relative to the query's best; relevance also sees its margin
# over its best rival. Ranking's weights are chosen on the dev half of scripts/eval/knowledge.py (--fit),
# which reports the test half beside vector-only search: the best share of answerable questions above the
# "no answer" line among the weights whose MRR is within 0.005 of the best. Relevance is a logistic
# function fitted there too, either on each question's leader (does the knowledge base answer this
# question?) or on every candidate (is this one the answer?), whichever keeps more answerable questions
# above the line: for MiniLM as changed for search the leader, where the cosine counts for more than the
# coverage and the margin (no-answer questions share their topic's words and meet them in many entries);
# fitted on every candidate, the margin outweighed the rest and, with as many no-answer questions below
# the line, 2 to 4 points fewer answerable ones stayed above it, dev and test. Cosine and coverage mean
# the same in a knowledge base of one entry or of thousands; BM25's scale does not, so it weighs little.
# (Reciprocal-rank fusion gave every result about the same score, answer or not.)
# The margin: a question without an answer in the knowledge base tends to meet several entries of its
# topic about equally well, an answered one its answer well ahead of the rest. It is measured against
# the best other result, or the model's rival floor when that is lower, so a lone or far-apart entry does not stand
# out by having no competition (for MiniLM): the lowest floor at which knowledge bases of 5 and 20 entries drawn from
# dev's corpora (an agent's linked items) keep as many of their no-answer dev questions below the line as whole
# corpora do (a lower one gains little on whole corpora and answers more of a small one's unlinked questions). Measured
# on dev and left out of relevance: a per-knowledge-base background (the score its entries' names, asked
# as questions, reach among the other entries) only moved the line corpus by corpus, separating no better. Nor,
# yet, the intent matcher's cross-encoder (``models/pair_encoder.py``) reading the question beside the leading
# chunk ("question [SEP] name: chunk"; it never learned from help centres): a logistic of the leader's relevance
# and that score, fitted leaving out one tuned corpus at a time on thirteen tuned corpora's dev half, kept 0.878 of
# answerable questions above the line with 80% of no-answer ones below it, against relevance's 0.824 (area under
# the curve 0.920 against 0.902), but only 0.795 against 0.785 at NO_ANSWER_SHARE's line, and the untuned
# corpora's dev half lost (0.682 against 0.788 at 80%, 35 no-answer questions); for one more model call a search.
# One learned from help centres (``models/answer_encoder.py``) now reads the leader again where relevance is unsure
# (``second_reading``).
# Measured there and left out of ranking, none gaining 0.01 MRR@10 on dev (the best +0.005): other fusion
# weights (the surface is flat around these), a chunk also scored by its best sentence or three-sentence
# window (max-sim, three times the embeddings), a vector of the item's name alone, a bonus from the other
# chunks of the same entry, IDF-weighted coverage, pseudo-relevance feedback, and spelling correction
# toward the corpus's words.
KEYWORD_HALF = 2.0  # the BM25 at which the saturated keyword feature (keyword mode) is 0.5
KEYWORD_ONLY = (-6.981, 1.794, 4.210, 2.084)  # bias, saturated BM25, relative BM25, coverage (no query vector)
RELEVANCE_THRESHOLD = 0.46  # documented "no answer" line: the lowest below which NO_ANSWER_SHARE of dev's no-answer questions fall
# Placed above 80% (what a user may count on) so that a new knowledge base, whose questions are not dev's, keeps 80%
# below it (at 0.80 on dev, test put 0.79 to 0.82 below it).
NO_ANSWER_SHARE = 0.85
EXACT_LIMIT = 4096  # scopes up to this many items are scanned exactly
SCAN_LIMIT = 100  # scopes up to this many items: every vector scored in numpy (vec0's KNN costs ~0.1 ms a result)
CANDIDATES = 768  # two-stage search: binary candidates rescored exactly (recall@5 ~0.97 at 100,000)
CACHED_ORGS = 16  # orgs whose bits stay in memory
FTS_TERMS = 32
# Words too common to rank by (BM25's IDF would only add noise from them on a small corpus).
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from had has have how i if in is it its me my no not of on or our "
    "so than that the their them then there these they this to was we were what when where which who why will with "
    "would you your".split()
)


@dataclass(frozen=True)
class Calibration:
    """The weights above, for one embedding model: two models put cosines on different scales
    (a query and its knowledge base's unrelated entries meet at about 0.82 with e5, far lower with MiniLM)."""
    fusion: tuple[float, float]  # weights of the coverage and the relative BM25 (the cosine's is 1)
    relevance: tuple[float, float, float, float, float]  # a, c, k, m, b: sigmoid(a * cosine + c * coverage + k * relative BM25 + m * margin + b)
    rival_floor: float  # the lowest rival a result's margin is measured against


# Fitted by scripts/eval/knowledge.py --fit, each with its bias placed so that RELEVANCE_THRESHOLD is
# its "no answer" line. A model without its own (remote, a GGUF file) is judged by MiniLM's. Refitted on eleven
# tuned corpora (four more than these were fitted on), MiniLM for search's line kept 0.818 of the fifteen corpora's
# dev answerable questions above it against 0.804 at the same share of no-answer ones below, but in knowledge bases
# of 20 entries drawn from the tuned corpora it put 0.812 of dev's no-answer questions below against 0.823 (same
# ranking): not adopted, as on nine before (test, reported only: 0.876 against 0.901, and 0.770 against 0.789).
CALIBRATIONS = {
    "all-minilm-l6-v2-search": Calibration((0.275, 0.050), (11.493, 1.229, -0.004, 8.936, -7.551), 0.53),
    "all-minilm-l6-v2": Calibration((0.200, 0.075), (9.096, -0.783, 2.901, 21.289, -8.475), 0.39),
    "e5-small": Calibration((0.000, 0.025), (38.497, -0.387, 3.757, 70.828, -37.760), 0.85),
}
DEFAULT_CALIBRATION = CALIBRATIONS["all-minilm-l6-v2"]


def calibration_of(model: str | None) -> Calibration:
    return CALIBRATIONS.get(model_of(model or ""), DEFAULT_CALIBRATION)


# What a vector stands for. "titled": the item's name (and the chunk's heading) then its text; an
# index without the key ("plain": the text alone) is noticed and needs 'flowbox knowledge reembed'.
TEXT_FORMAT = "titled"


@dataclass(frozen=True)
class IndexInfo:
    model: str
    dim: int
    version: int
    text: str = TEXT_FORMAT

    def table(self, kind: str) -> str:
        return f"knowledge_{kind}_v{self.version}"


def info(conn) -> IndexInfo | None:
    meta = {row[0]: row[1] for row in conn.execute("SELECT key, value FROM knowledge_meta")}
    if "version" not in meta:
        return None
    return IndexInfo(meta["model"], int(meta["dim"]), int(meta["version"]), meta.get("text", "plain"))


def mismatch(current: IndexInfo, model: str):
    if current.model == model and current.text != TEXT_FORMAT:
        return error(
            503, "Service temporarily unavailable",
            "The knowledge index was built by an earlier flowbox, which embedded entries without their names; "
            "run 'flowbox knowledge reembed'.",
        )
    return error(
        503, "Service temporarily unavailable",
        f"The knowledge index was built with the embedding model {current.model!r}, but {model!r} is "
        "configured; run 'flowbox knowledge reembed'.",
    )


def built_for(current: IndexInfo, model: str, dim: int | None = None) -> bool:
    """Whether ``current`` was built by ``model`` (of ``dim`` dimensions, when given) in this text format."""
    return current.model == model and (dim is None or current.dim == dim) and current.text == TEXT_FORMAT


def check(current: IndexInfo, model: str, dim: int | None = None) -> None:
    """A 503 naming the fix unless ``current`` was built for ``model`` in this text format."""
    if not built_for(current, model, dim):
        raise mismatch(current, model)


def create_tables(conn, index: IndexInfo) -> None:
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {index.table('vec')} USING vec0("
        f"org_id text partition key, embedding float[{index.dim}] distance_metric=cosine)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {index.table('bits')} ("
        "org_id TEXT NOT NULL, n INTEGER NOT NULL, bits BLOB NOT NULL, PRIMARY KEY (org_id, n)) WITHOUT ROWID"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {index.table('vectors')} ("
        "n INTEGER PRIMARY KEY, hash TEXT NOT NULL, embedding BLOB NOT NULL)"
    )


def drop_tables(conn, index: IndexInfo) -> None:
    for kind in ("vec", "bits", "vectors"):
        conn.execute(f"DROP TABLE IF EXISTS {index.table(kind)}")


def set_info(conn, index: IndexInfo) -> None:
    conn.executemany(
        "INSERT INTO knowledge_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [("model", index.model), ("dim", str(index.dim)), ("version", str(index.version)), ("text", index.text)],
    )


def ensure(conn, model: str, dim: int) -> IndexInfo:
    """The index for ``model`` (created on first use); a 503 if another model built it."""
    current = info(conn)
    if current is None:
        current = IndexInfo(model, dim, 1)
        create_tables(conn, current)
        set_info(conn, current)
    else:
        check(current, model, dim)
    return current


def indexed_text(item: dict) -> str:
    """What the vector stands for: the item's name and the text's heading (when the name does not
    already hold it) in front of the description when one is given, else the content. A chunk
    alone often never says what it is about ("Up to 10,000 rows per import."); its title does."""
    text = item.get("description_to_index_on") or item["content"]
    title = (item.get("name") or "").strip()
    heading = first_heading(text)
    if heading and heading.lower() not in title.lower() and not text.lstrip().startswith("#"):
        title = f"{title}: {heading}" if title else heading
    return f"{title}\n{text}" if title else text


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def bump(conn, org_ids: Iterable[str]) -> None:
    """Marks the orgs' indexed data as changed (cached bits are reloaded)."""
    conn.executemany(
        "INSERT INTO knowledge_generations (org_id, generation) VALUES (?, 1) "
        "ON CONFLICT(org_id) DO UPDATE SET generation = generation + 1",
        [(org,) for org in set(org_ids)],
    )


def write_vectors(conn, index: IndexInfo, rows: Iterable[tuple[int, str, str, Sequence[float]]]) -> None:
    """(n, org_id, hash, vector) rows replace the items' vectors."""
    rows = list(rows)
    delete_vectors(conn, index, [(n, org) for n, org, _, _ in rows])
    blobs = [(n, org, h, np.asarray(v, dtype=np.float32).tobytes()) for n, org, h, v in rows]
    conn.executemany(f"INSERT INTO {index.table('vec')} (rowid, org_id, embedding) VALUES (?, ?, ?)",
                     [(n, org, blob) for n, org, _, blob in blobs])
    conn.executemany(f"INSERT INTO {index.table('bits')} (org_id, n, bits) VALUES (?, ?, vec_quantize_binary(?))",
                     [(org, n, blob) for n, org, _, blob in blobs])
    conn.executemany(f"INSERT INTO {index.table('vectors')} (n, hash, embedding) VALUES (?, ?, ?)",
                     [(n, h, blob) for n, _, h, blob in blobs])
    bump(conn, [org for _, org, _, _ in rows])


def delete_vectors(conn, index: IndexInfo, items: Sequence[tuple[int, str]]) -> None:
    """Removes the vectors of (n, org_id) items."""
    conn.executemany(f"DELETE FROM {index.table('vec')} WHERE rowid = ?", [(n,) for n, _ in items])
    conn.executemany(f"DELETE FROM {index.table('bits')} WHERE org_id = ? AND n = ?", [(org, n) for n, org in items])
    conn.executemany(f"DELETE FROM {index.table('vectors')} WHERE n = ?", [(n,) for n, _ in items])
    bump(conn, [org for _, org in items])


# One FTS5 table per org (``knowledge_fts_<k>``, numbered in ``knowledge_keyword_tables``): BM25 counts
# documents and words over its whole table, so a table shared by orgs let one org's entries move another's
# keyword scores (and the relevance calibrated on them), and hinted at what the others hold.
FTS_COLUMNS = "name, body, content='', contentless_delete=1, tokenize='porter unicode61 remove_diacritics 2'"


def fts_table(conn, org_id: str, create: bool = False) -> str | None:
    """The name of the org's FTS5 table; None when it has none (and ``create`` is false)."""
    row = conn.execute("SELECT k FROM knowledge_keyword_tables WHERE org_id = ?", [org_id]).fetchone()
    if row is not None:
        return f"knowledge_fts_{row[0]}"
    if not create:
        return None
    k = conn.execute("INSERT INTO knowledge_keyword_tables (org_id) VALUES (?)", [org_id]).lastrowid
    conn.execute(f"CREATE VIRTUAL TABLE knowledge_fts_{k} USING fts5({FTS_COLUMNS})")
    return f"knowledge_fts_{k}"


def write_fts(conn, org_id: str, rows: Iterable[tuple[int, str | None, str]]) -> None:
    """(n, name, body) rows of one org's items replace their FTS rows."""
    rows = list(rows)
    table = fts_table(conn, org_id, create=True)
    conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(r[0],) for r in rows])
    conn.executemany(f"INSERT INTO {table} (rowid, name, body) VALUES (?, ?, ?)",
                     [(n, name or "", body) for n, name, body in rows])


def delete_fts(conn, org_id: str, ns: Sequence[int]) -> None:
    table = fts_table(conn, org_id)
    if table is not None:
        conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(n,) for n in ns])


# -- search ------------------------------------------------------------------------------------

def _scope(org_id: str, agent_id: str | None) -> tuple[str, list]:
    """SQL selecting the item numbers a search may return: the org's, or those linked to an agent."""
    if agent_id is None:
        return "SELECT n FROM knowledge_items WHERE org_id = ?", [org_id]
    return ("SELECT l.item_n FROM knowledge_links l JOIN knowledge_items i ON i.n = l.item_n "
            "WHERE l.agent_id = ? AND i.org_id = ?"), [agent_id, org_id]


def vector_search(conn, index: IndexInfo, org_id: str, agent_id: str | None, query: Sequence[float],
                  limit: int, exact_limit: int = EXACT_LIMIT, candidates: int = CANDIDATES) -> list[tuple[int, float]]:
    """(n, cosine similarity) best first: every vector scored on small scopes, exact KNN (vec0)
    on larger ones, and on large ones the ``candidates`` nearest by hamming distance of the
    bits, rescored exactly."""
    blob = np.asarray(query, dtype=np.float32).tobytes()
    scope_sql, scope_args = _scope(org_id, agent_id)
    # counting stops past the exact limit: a 100,000-item org is not counted on every search
    size = conn.execute(f"SELECT count(*) FROM ({scope_sql} LIMIT ?)", [*scope_args, exact_limit + 1]).fetchone()[0]
    if size == 0:
        return []
    if size <= SCAN_LIMIT:
        return rescore(conn, index, [n for (n,) in conn.execute(scope_sql, scope_args)], query)[:limit]
    if size <= exact_limit:
        # vec0 takes the agent's items as a rowid IN list; a whole org is its partition
        agent_filter = f" AND rowid IN ({scope_sql})" if agent_id is not None else ""
        rows = conn.execute(
            f"SELECT rowid, distance FROM {index.table('vec')} WHERE embedding MATCH ? AND k = ? AND org_id = ?{agent_filter}",
            [blob, min(limit, size), org_id, *(scope_args if agent_id is not None else [])],
        ).fetchall()
        return [(n, 1.0 - distance) for n, distance in rows]
    ns, bits = org_bits(conn, index, org_id)
    (packed,) = conn.execute("SELECT vec_quantize_binary(?)", [blob]).fetchone()
    distance = _popcount(bits ^ np.frombuffer(packed, dtype=bits.dtype)).sum(axis=1, dtype=np.int32)
    if agent_id is not None:
        linked = np.fromiter((n for (n,) in conn.execute(scope_sql, scope_args)), dtype=np.int64)
        distance[~np.isin(ns, linked)] = np.iinfo(np.int32).max
    take = min(max(candidates, limit), len(ns))
    nearest = np.argpartition(distance, take - 1)[:take]
    nearest = nearest[distance[nearest] < np.iinfo(np.int32).max]
    return rescore(conn, index, ns[nearest].tolist(), query)[:limit]


_popcount = getattr(np, "bitwise_count", None) or (lambda a: np.unpackbits(a.view(np.uint8), axis=-1))
_bits_cache: collections.OrderedDict[tuple, tuple[int, np.ndarray, np.ndarray]] = collections.OrderedDict()
_bits_lock = threading.Lock()


def org_bits(conn, index: IndexInfo, org_id: str) -> tuple[np.ndarray, np.ndarray]:
    """An org's item numbers and their bits (a matrix), from memory while its generation holds."""
    row = conn.execute("SELECT generation FROM knowledge_generations WHERE org_id = ?", [org_id]).fetchone()
    generation = row[0] if row else 0
    key = (conn.execute("PRAGMA database_list").fetchone()[2], org_id, index.version)
    with _bits_lock:
        cached = _bits_cache.get(key)
        if cached is not None and cached[0] == generation:
            _bits_cache.move_to_end(key)
            return cached[1], cached[2]
    rows = conn.execute(f"SELECT n, bits FROM {index.table('bits')} WHERE org_id = ?", [org_id]).fetchall()
    word = np.uint64 if index.dim % 64 == 0 else np.uint8
    ns = np.fromiter((n for n, _ in rows), dtype=np.int64, count=len(rows))
    bits = np.frombuffer(b"".join(b for _, b in rows), dtype=word).reshape(len(rows), -1)
    with _bits_lock:
        _bits_cache[key] = (generation, ns, bits)
        _bits_cache.move_to_end(key)
        while len(_bits_cache) > CACHED_ORGS:
            _bits_cache.popitem(last=False)
    return ns, bits


def rescore(conn, index: IndexInfo, ns: Sequence[int], query: Sequence[float]) -> list[tuple[int, float]]:
    """Exact cosine similarity of the given items to the query, best first."""
    if not ns:
        return []
    found: list[int] = []
    blobs: list[bytes] = []
    for start in range(0, len(ns), 500):
        part = ns[start:start + 500]
        for n, blob in conn.execute(
            f"SELECT n, embedding FROM {index.table('vectors')} WHERE n IN ({','.join('?' * len(part))})", list(part)
        ):
            found.append(n)
            blobs.append(blob)
    if not found:
        return []
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(found), index.dim)
    scores = matrix @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    return [(found[i], float(scores[i])) for i in order]


_WORD = re.compile(r"\w+")


def query_words(text: str) -> list[str]:
    """The words a query is matched by: every word but stopwords, lowercased, once each."""
    return [w for w in dict.fromkeys(w.lower() for w in _WORD.findall(text)) if w not in STOPWORDS][:FTS_TERMS]


def fts_query(text: str) -> str:
    """Free text as an FTS5 query: the query's words, quoted (so user input is never FTS syntax), OR-ed."""
    return " OR ".join(f'"{w}"' for w in query_words(text))


ENDINGS = ("ing", "ed", "es", "s")  # a word counts as found with or without one of these


def _stem(word: str) -> str:
    for ending in ENDINGS:
        if word.endswith(ending) and len(word) > len(ending) + 3:
            return word[:-len(ending)]
    return word


def coverage(text: str, documents: dict[int, str]) -> dict[int, float]:
    """Per document, the share of the query's words it contains ("dumped" counts for "dumping"): a
    measure of the query's own words, the same in a knowledge base of one entry or of thousands."""
    stems = list(dict.fromkeys(_stem(w) for w in query_words(text)))
    forms = [(stem, *(stem + ending for ending in ENDINGS)) for stem in stems]
    shares = {}
    for n, doc in documents.items():
        low = doc.lower()
        present = [f for f in forms if f[0] in low]  # a substring test first: most words are in few documents
        if present:
            words = set(_WORD.findall(low))
            shares[n] = sum(any(w in words for w in f) for f in present) / len(stems)
        else:
            shares[n] = 0.0
    return shares


def keyword_search(conn, org_id: str, agent_id: str | None, text: str, limit: int) -> list[tuple[int, float]]:
    """(n, bm25) best first (FTS5's bm25 is lower-is-better; returned negated)."""
    query = fts_query(text)
    table = fts_table(conn, org_id)
    if not query or table is None:
        return []
    # The org's table holds only the org's items; an agent's scope filters the matches ("+rowid": a plain
    # "rowid IN" is handed to FTS5, which then runs the whole MATCH once per item of the scope, 27 ms
    # instead of 2 at 50 items).
    scope, scope_args = "", []
    if agent_id is not None:
        scope_sql, scope_args = _scope(org_id, agent_id)
        scope = f"AND +rowid IN ({scope_sql}) "
    rows = conn.execute(
        f"SELECT rowid, bm25({table}) AS score FROM {table} WHERE {table} MATCH ? {scope}ORDER BY score LIMIT ?",
        [query, *scope_args, limit],
    ).fetchall()
    return [(n, -score) for n, score in rows]


def sigmoid(z: float) -> float:
    """The logistic function, clamped so that no score overflows it."""
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def features(similarity: float, coverage: float, keyword: float, best_keyword: float) -> tuple[float, float, float]:
    """What ranking and relevance see of one result: its cosine, its coverage of the query's words
    and its BM25 relative to the query's best (how it ranks among the keyword matches)."""
    return (similarity, coverage, keyword / best_keyword if best_keyword > 0 else 0.0)


def fused(similarity: float, coverage: float, keyword: float, best_keyword: float,
          cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """The hybrid ranking score."""
    cos, cov, rel = features(similarity, coverage, keyword, best_keyword)
    return cos + cal.fusion[0] * cov + cal.fusion[1] * rel


def margin(score: float, rival: float | None, cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """How far a result's fused score stands above its best rival (the best other result's score,
    never below the model's ``rival_floor``; None: no other result); 0 when it does not."""
    return max(0.0, score - (cal.rival_floor if rival is None else max(rival, cal.rival_floor)))


def rivals(scores: Sequence[float]) -> list[float | None]:
    """Each result's rival, given the fused scores of all of them: the best other result's score (the
    leader's is the runner-up's, everyone else's the leader's; None for a result alone)."""
    if not scores:
        return []
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    leader, runner_up = order[0], (scores[order[1]] if len(order) > 1 else None)
    return [runner_up if i == leader else scores[leader] for i in range(len(scores))]


def relevance(similarity: float | None, coverage: float, keyword: float, best_keyword: float,
              rival: float | None = None, cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """How likely the result answers the query, 0 to 1, from its cosine, coverage and relative BM25 and
    its margin over ``rival`` (the best fused score among the other results), calibrated on the dev half
    of ``scripts/eval/knowledge.py`` (with MiniLM for search: as the probability that the knowledge base
    answers the question when the result leads; one behind the leader has no margin, so it reads lower).
    Without a query vector (keyword mode), from the words alone."""
    if similarity is None:
        _, cov, rel = features(0.0, coverage, keyword, best_keyword)
        b0, b_sat, b_rel, b_cov = KEYWORD_ONLY
        return sigmoid(b0 + b_sat * keyword / (keyword + KEYWORD_HALF) + b_rel * rel + b_cov * cov)
    cos, cov, rel = features(similarity, coverage, keyword, best_keyword)
    a, c, k, m, b = cal.relevance
    score = fused(similarity, coverage, keyword, best_keyword, cal)
    return sigmoid(a * cos + c * cov + k * rel + m * margin(score, rival, cal) + b)


def handed_on(results: Sequence[dict], limit: int) -> list[dict]:
    """What an agent is given of a search (results best first): nothing when the best result is below the
    "no answer" line, else the first ``limit``. The leader's relevance says whether the knowledge base
    answers the question; the runners-up come with it because the answer is often among them when it is
    not the leader (their own relevance is low by design: they have no margin)."""
    if not results or results[0]["relevance"] < RELEVANCE_THRESHOLD:
        return []
    return list(results[:limit])


def documents(conn, ns: Sequence[int]) -> dict[int, str]:
    """The text BM25 indexes for each item (its name, content and description): what coverage reads."""
    if not ns:
        return {}
    return {n: "\n".join(t for t in parts if t) for n, *parts in conn.execute(
        f"SELECT n, name, content, description_to_index_on FROM knowledge_items WHERE n IN ({','.join('?' * len(ns))})",
        list(ns))}


def hybrid_search(conn, index: IndexInfo | None, org_id: str, agent_id: str | None, text: str,
                  query: Sequence[float] | None, limit: int, mode: str = "hybrid") -> list[dict]:
    """The top ``limit`` items as dicts with ``n``, ``score`` (what the mode ranks by), ``similarity``
    (cosine), ``keyword`` (BM25), ``coverage`` (share of the query's words in the item) and ``relevance``
    (0 to 1), best first. ``mode``: hybrid (``fused``: the cosine plus weighted coverage and BM25),
    vector (cosine) or keyword (BM25). Every mode's
    candidates get every feature, so ``relevance`` means the same in all."""
    depth = max(limit * 4, 20)
    has_vector = index is not None and query is not None
    vector = vector_search(conn, index, org_id, agent_id, query, depth) if has_vector and mode != "keyword" else []
    keyword = dict(keyword_search(conn, org_id, agent_id, text, depth))
    similarity = dict(vector)
    candidates = list(dict.fromkeys([*similarity, *(keyword if mode != "vector" else ())]))
    missing = [n for n in candidates if n not in similarity]
    if missing and has_vector:
        similarity.update(rescore(conn, index, missing, query))
    best = max(keyword.values(), default=0.0)
    covered = coverage(text, documents(conn, candidates))
    cal = calibration_of(index.model if index is not None else None)
    scores = {n: fused(similarity.get(n) or 0.0, covered.get(n, 0.0), keyword.get(n, 0.0), best, cal) for n in candidates}
    rival = dict(zip(candidates, rivals([scores[n] for n in candidates])))
    hits = []
    for n in candidates:
        cos = similarity.get(n) if has_vector else None
        cov = covered.get(n, 0.0)
        rel = relevance(cos, cov, keyword.get(n, 0.0), best, rival[n], cal)
        if mode == "vector":
            score = cos or 0.0
        elif mode == "keyword":
            score = keyword.get(n, 0.0)
        else:
            score = scores[n]
        hits.append({"n": n, "score": round(score, 6), "similarity": round(cos or 0.0, 6),
                     "keyword": round(keyword.get(n, 0.0), 6), "coverage": round(cov, 6), "relevance": round(rel, 6)})
    hits.sort(key=lambda h: (-h["score"], -h["similarity"], h["n"]))
    return hits[:limit]
