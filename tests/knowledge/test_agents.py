"""Agents answering from the knowledge base: the real local model, real embeddings, a corpus of
made-up facts no model can know. Asserts what was retrieved and used (the knowledge_search call
and its result in conversation_history), never the model's wording."""

from __future__ import annotations

import pytest

from flowbox.agents.tools import ToolContext, tools_for_agent
from tests.helpers import add_knowledge, create_agent, knowledge_org

CORPUS = {
    "warranty": "The warranty registration code for the Zephyr-9 drone is QF-7731.",
    "flight": "The Zephyr-9 drone has a flight time of 41 minutes and weighs 812 grams.",
    "support": "Quillfeather Labs' support line is open from 7am to 3pm on weekdays.",
    "cat": "The office cat at Quillfeather Labs is named Pistachio.",
}
INSTRUCTIONS = "You are the support assistant of Quillfeather Labs. Answer from the knowledge base in one short sentence."


@pytest.fixture
def linked(srv):
    """In a fresh org: an agent linked to the corpus, the corpus' item ids by key, a client."""
    org_id, client, agent = knowledge_org(srv, name="support", instructions=INSTRUCTIONS, max_tokens=24)
    ids = {key: add_knowledge(client, [agent["id"]], content, name=key)["id"] for key, content in CORPUS.items()}
    return org_id, client, agent, ids


def knowledge_results(body: dict) -> list[list[str]]:
    """For each knowledge_search result in the history: the ids of the entries it returned."""
    found = []
    for message in body["conversation_history"]:
        if message["role"] == "tool":
            for part in message["content"]:
                if part["toolName"] == "knowledge_search":
                    found.append([r["id"] for r in part["result"]["results"]])
    return found


def test_agent_answers_from_the_retrieved_entry(linked):
    _, client, agent, ids = linked
    response = client.post(f"/api/public/agent/{agent['id']}/chat",
                                    json={"messages": "What is the warranty registration code for the Zephyr-9?"})
    assert response.status_code == 200, response.text
    body = response.json()["body"]
    history = body["conversation_history"]
    # user, the search call, its result, the answer
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    call = history[1]["content"][0]
    assert call["type"] == "tool-call" and call["toolName"] == "knowledge_search"
    assert call["args"] == {"query": "What is the warranty registration code for the Zephyr-9?"}
    results = knowledge_results(body)
    assert results and results[0][0] == ids["warranty"]  # the entry that holds the answer came first
    result = history[2]["content"][0]["result"]["results"][0]
    assert result["content"] == CORPUS["warranty"]
    # the same call is in the response metadata, and the answer is a plain assistant message
    calls = body["metadata"]["tool_calls"]
    assert [c["toolName"] for c in calls.values()] == ["knowledge_search"]
    assert isinstance(history[3]["content"], str) and history[3]["content"]
    # and the thread keeps it: a follow-up sees the same history
    thread = client.get(f"/api/public/agent/{agent['id']}/threads/{body['metadata']['thread_id']}").json()
    assert [m["id"] for m in thread["messages"]] == [m["id"] for m in history]


def test_unrelated_message_retrieves_nothing(linked):
    _, client, agent, _ = linked
    body = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hi"}).json()["body"]
    assert [m["role"] for m in body["conversation_history"]] == ["user", "assistant"]
    assert body["metadata"]["tool_calls"] == {}


def test_only_linked_entries_of_the_own_org_are_retrieved(srv, linked):
    _, client, agent, ids = linked
    # same org, linked to one other entry only
    narrow = create_agent(client, name="narrow", instructions=INSTRUCTIONS, max_tokens=16)
    client.patch(f"/api/public/knowledge/{ids['cat']}", json={"agent_ids": [agent["id"], narrow["id"]]})
    body = client.post(f"/api/public/agent/{narrow['id']}/chat",
                       json={"messages": "What is the warranty registration code for the Zephyr-9?"}).json()["body"]
    assert all(set(results) <= {ids["cat"]} for results in knowledge_results(body))
    # same org, nothing linked: no knowledge tool at all
    bare = create_agent(client, name="bare", max_tokens=16)
    body = client.post(f"/api/public/agent/{bare['id']}/chat",
                       json={"messages": "What is the warranty registration code for the Zephyr-9?"}).json()["body"]
    assert knowledge_results(body) == []

    # another org with its own linked entry never sees ours
    org_id, other, theirs = knowledge_org(srv, name="theirs")
    add_knowledge(other, theirs["id"], "Their drone is the Kestrel-2.")

    async def tool_search():
        ctx = ToolContext(srv.services.store, org_id, theirs["id"], srv.services)
        tools = {t.name: t for t in await tools_for_agent(ctx, {**theirs, "tools": []})}
        return await tools["knowledge_search"].run({"query": "Zephyr-9 warranty registration code drone"}, ctx)

    result = srv.call(tool_search())
    assert ids["warranty"] not in [r["id"] for r in result["results"]]
    assert all(r["content"] == "Their drone is the Kestrel-2." for r in result["results"])


def test_search_tool_returns_linked_entries_best_first(srv, linked):
    org_id, _, agent, ids = linked

    async def run():
        ctx = ToolContext(srv.services.store, org_id, agent["id"], srv.services)
        tools = {t.name: t for t in await tools_for_agent(ctx, agent)}
        spec = tools["knowledge_search"].spec
        # the router is offered the user's own words as the query
        assert spec.candidates("How long does the drone fly?") == {"query": ["How long does the drone fly?"]}
        return await tools["knowledge_search"].run({"query": "How long does the drone fly?"}, ctx)

    result = srv.call(run())
    assert result["results"][0]["id"] == ids["flight"]
    assert [r["relevance"] for r in result["results"]] == sorted((r["relevance"] for r in result["results"]), reverse=True)
