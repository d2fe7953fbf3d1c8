"""The vector index on a real SQLite file with sqlite-vec, without a model: the two-stage search
(binary candidates, exact rescoring) against exact KNN, its org and agent scoping, the cached
bits following writes, and reciprocal rank fusion."""

from __future__ import annotations

import numpy as np
import pytest

from flowbox import db
from flowbox.ids import iso
from flowbox.knowledge import index as idx

DIM = 384


@pytest.fixture
def conn(tmp_path):
    path = tmp_path / "index.db"
    db.migrate(path)
    connection = db.connect(path)
    now = iso()
    for org in ("org-a", "org-b"):
        connection.execute("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)", [org, org, now])
    connection.execute("INSERT INTO agents (id, org_id, name, created_at, updated_at) VALUES ('agent-a', 'org-a', 'a', ?, ?)", [now, now])
    yield connection
    connection.close()


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def fill(conn, org: str, vectors: np.ndarray, first_n: int) -> idx.IndexInfo:
    now = iso()
    conn.execute("BEGIN")
    index = idx.ensure(conn, "test-model", DIM)
    ns = list(range(first_n, first_n + len(vectors)))
    conn.executemany("INSERT INTO knowledge_items (n, id, org_id, content, created_at, updated_at) VALUES (?, ?, ?, 'x', ?, ?)",
                     [(n, f"item-{n}", org, now, now) for n in ns])
    idx.write_vectors(conn, index, [(n, org, "h", v) for n, v in zip(ns, vectors)])
    conn.execute("COMMIT")
    return index


def exact_top(vectors: np.ndarray, first_n: int, query: np.ndarray, k: int) -> list[int]:
    return (np.argsort(-(vectors @ query))[:k] + first_n).tolist()


def test_two_stage_matches_exact_search(conn):
    rng = np.random.default_rng(1)
    vectors = unit(rng.standard_normal((3000, DIM)))
    index = fill(conn, "org-a", vectors, 1)
    fill(conn, "org-b", unit(rng.standard_normal((500, DIM))), 10_001)
    for query in unit(rng.standard_normal((5, DIM))):
        exact = idx.vector_search(conn, index, "org-a", None, query, 5)  # 3000 <= EXACT_LIMIT: vec0 KNN
        assert [n for n, _ in exact] == exact_top(vectors, 1, query, 5)
        # every item a candidate: the two stages must give exactly the exact answer and scores
        everything = idx.vector_search(conn, index, "org-a", None, query, 5, exact_limit=0, candidates=3000)
        assert [n for n, _ in everything] == [n for n, _ in exact]
        assert np.allclose([s for _, s in everything], [s for _, s in exact], atol=1e-5)
    # near-duplicates of stored vectors are found through the bits (the query is quantized like the rows)
    for i in rng.integers(0, 3000, 20):
        query = unit(vectors[i] + 0.3 * unit(rng.standard_normal(DIM)))
        found = idx.vector_search(conn, index, "org-a", None, query, 5, exact_limit=0, candidates=64)
        assert found[0][0] == i + 1 and all(10_001 > n for n, _ in found)  # never org-b's items


def test_two_stage_scopes_and_follows_writes(conn):
    rng = np.random.default_rng(2)
    vectors = unit(rng.standard_normal((1000, DIM)))
    index = fill(conn, "org-a", vectors, 1)
    linked = list(range(1, 1000, 3))
    conn.executemany("INSERT INTO knowledge_links (item_n, agent_id, pos) VALUES (?, 'agent-a', 0)", [(n,) for n in linked])
    query = unit(rng.standard_normal(DIM))
    scoped = idx.vector_search(conn, index, "org-a", "agent-a", query, 10, exact_limit=0, candidates=1000)
    assert set(n for n, _ in scoped) <= set(linked) and len(scoped) == 10
    assert [n for n, _ in scoped] == [n for n, _ in idx.vector_search(conn, index, "org-a", "agent-a", query, 10)]

    # the cached bits follow writes: a new item right at the query is found, then gone once deleted
    fill(conn, "org-a", query[None, :], 5000)
    assert idx.vector_search(conn, index, "org-a", None, query, 1, exact_limit=0, candidates=16)[0][0] == 5000
    conn.execute("BEGIN")
    idx.delete_vectors(conn, index, [(5000, "org-a")])
    conn.execute("COMMIT")
    assert idx.vector_search(conn, index, "org-a", None, query, 1, exact_limit=0, candidates=16)[0][0] != 5000
    assert idx.vector_search(conn, index, "org-b", None, query, 5, exact_limit=0) == []


def test_relevance_is_a_probability_rising_with_every_feature():
    values = [idx.relevance(cos, cov, kw, 10.0) for cos in (-1.0, 0.0, 0.3, 0.6, 1.0) for cov in (0.0, 0.5, 1.0)
              for kw in (0.0, 5.0, 10.0)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert idx.relevance(0.6, 0.0, 0.0, 10.0) > idx.relevance(0.3, 0.0, 0.0, 10.0)  # closer vector
    assert idx.relevance(0.5, 1.0, 0.0, 10.0) > idx.relevance(0.5, 0.0, 0.0, 10.0)  # more of the query's words
    assert idx.relevance(0.5, 0.5, 10.0, 10.0) > idx.relevance(0.5, 0.5, 0.0, 10.0)  # the best keyword match
    assert idx.relevance(None, 0.5, 10.0, 10.0) > idx.relevance(None, 0.5, 1.0, 10.0)  # keyword mode: words alone
    assert idx.relevance(None, 1.0, 5.0, 10.0) > idx.relevance(None, 0.0, 5.0, 10.0)
    assert idx.relevance(0.1, 0.0, 0.0, 0.0) < idx.RELEVANCE_THRESHOLD < idx.relevance(0.9, 0.0, 0.0, 0.0)


def test_a_result_well_ahead_of_its_rival_is_more_relevant():
    """The same match is likelier the answer when no other result comes close; a rival below the
    floor counts as the floor, so a lone entry does not stand out for having no competition."""
    ahead, close = idx.relevance(0.55, 0.5, 5.0, 10.0, rival=0.4), idx.relevance(0.55, 0.5, 5.0, 10.0, rival=0.62)
    assert ahead > close > idx.relevance(0.55, 0.5, 5.0, 10.0, rival=0.7)
    # behind a rival (not the leader): no margin, however far behind
    assert idx.relevance(0.55, 0.5, 5.0, 10.0, rival=0.7) == idx.relevance(0.55, 0.5, 5.0, 10.0, rival=0.9)
    assert idx.relevance(0.55, 0.5, 5.0, 10.0, rival=0.0) == idx.relevance(0.55, 0.5, 5.0, 10.0) == \
        idx.relevance(0.55, 0.5, 5.0, 10.0, rival=idx.DEFAULT_CALIBRATION.rival_floor)
    assert idx.margin(0.3, None) == 0.0 and idx.margin(0.6, 0.5) == pytest.approx(0.1)


def test_coverage_is_the_share_of_the_query_words_an_item_has():
    found = idx.coverage("Who dumped the mattresses in our alley?", {
        1: "Dumping mattresses in an alley is fly-tipping.", 2: "Mattress collection", 3: "Opening hours", 4: ""})
    # words: dumped, mattresses, alley ("who", "the", "in", "our" are stopwords); endings aside
    assert found == {1: 1.0, 2: pytest.approx(1 / 3), 3: 0.0, 4: 0.0}
    assert idx.coverage("the of and", {1: "the of and"}) == {1: 0.0}  # no words to find
    assert idx.coverage('"E204" OR (x', {1: "Error E204: the pod lost its link"}) == {1: 0.5}  # never a pattern


def test_keyword_query_is_never_fts_syntax():
    assert idx.fts_query('What is "QF-7731" OR NEAR(x y)?') == '"qf" OR "7731" OR "near" OR "x" OR "y"'
    assert idx.fts_query("the of and ???") == ""
