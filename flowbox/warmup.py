"""Warm start: what a restarted server prepares before its first message asks for it.

A data dir that holds projects with flows gets the embedding model loaded and the intent indexes
of its projects' flows built (example vectors from SQLite, the stored intent model) in the
background after startup, so the first message after a restart is answered as fast as later ones,
and startup itself waits for none of it. One that holds knowledge items gets the knowledge base's
embedding model loaded, and its index re-embedded when another model built it. An empty data dir
loads nothing. When the model cannot be loaded this logs it once and everything stays lazy, as
without a warm start.
"""

from __future__ import annotations

import asyncio
import logging

from .embeddings import answer_reader, get_embedder, has_pairs
from .knowledge import index as idx
from .knowledge.reembed import reembed
from .messaging.conversation import prepare
from .services import Services

log = logging.getLogger("flowbox")
# Projects prepared at start, the most recently changed first; any other is prepared by its first
# message, as before (thousands of idle projects should not hold the CPU after every restart).
WARM_PROJECTS = 100


def start(services: Services) -> asyncio.Task:
    return services.spawn(_warm(services), name="warm-start")


async def _warm(services: Services) -> None:
    store = services.store
    projects = await store.fetchall(
        "SELECT id, flows_version FROM msg_projects p WHERE EXISTS (SELECT 1 FROM msg_flows WHERE project_id = p.id) "
        "ORDER BY updated_at DESC LIMIT ?", [WARM_PROJECTS])
    if await store.fetchone("SELECT 1 FROM knowledge_items LIMIT 1"):
        services.spawn(_warm_knowledge(services), name="warm-knowledge")
    if not projects:
        return
    try:
        embedder = await get_embedder(services, intents=True)  # the intent matcher's
        await embedder.embed(["warm start"])  # a model's first call sets up its buffers: not a user's wait
        if has_pairs(services):  # and its second reading's (matcher.Embeddings loads it with the first)
            await (await get_embedder(services, pairs=True)).embed(["warm start [SEP] warm start"])
    except Exception as exc:  # noqa: BLE001 - a missing model is loaded (or reported) again when first needed
        log.warning("embedding model not loaded at start: %s", exc)
        return
    for project in projects:
        graph = await prepare(services, dict(project))
        if graph is not None and graph.index.learning is not None:  # one project's model at a time: live requests share the CPU
            await asyncio.wait([graph.index.learning])


async def _warm_knowledge(services: Services) -> None:
    """Loads the knowledge base's embedder (and its second reading's); an index built with another model (an upgrade that
    changed the default, a changed ``knowledge_embedding_model``) or text format is re-embedded,
    as ``flowbox knowledge reembed`` would, while searches answer 503 saying so."""
    try:
        embedder = await get_embedder(services, knowledge=True)
        await embedder.embed(["warm start"])
    except Exception as exc:  # noqa: BLE001 - loaded (or reported) again when first needed
        log.warning("knowledge embedding model not loaded at start: %s", exc)
        return
    if (answers := await answer_reader(services)) is not None:  # the second reading's (knowledge.second_reading)
        try:
            await answers.embed(["warm start [SEP] warm start"])
        except Exception as exc:  # noqa: BLE001 - a search whose reading fails keeps the search's word
            log.warning("the knowledge base's answer encoder failed at start: %r", exc)
    async with services.store.read() as tx:
        index = await tx.run(idx.info)
    if index is None or idx.built_for(index, embedder.name, embedder.dim):
        return
    log.info("re-embedding the knowledge base with %s (its index was built with %s)", embedder.name, index.model)
    try:
        result = await reembed(services.store, embedder)
    except Exception as exc:  # noqa: BLE001 - 'flowbox knowledge reembed' does the same by hand
        log.warning("re-embedding the knowledge base failed: %r; run 'flowbox knowledge reembed'", exc)
        return
    log.info("knowledge base re-embedded: %d items with %s", result["items"], result["model"])
