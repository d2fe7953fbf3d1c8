"""The Knowledge API on a real server with real embeddings (all-MiniLM-L6-v2 via llama.cpp) and
a real SQLite file with sqlite-vec: CRUD, every documented error body, pagination edges, re-embedding,
deletion, org and agent isolation, atomic writes. One server for the module; each test works in
its own org so tests stay independent."""

from __future__ import annotations

import pytest

from tests.helpers import KNOWLEDGE_URL as URL
from tests.helpers import add_knowledge, create_agent, knowledge_org

MISSING_KEY = {"error": "API key is required", "message": "Please provide an API key in the Authorization header"}
INVALID_KEY = {"error": "Invalid API key", "message": "The provided API key is not valid"}
NOT_FOUND = {"error": "Knowledge item not found or access denied"}
TOO_LONG = {"error": "Content exceeds character limit", "message": "The content field must be 4000 characters or less."}
CONTENT_REQUIRED = {"error": "content is required and must be a non-empty string"}
AGENT_IDS_REQUIRED = {"error": "agent_ids is required and must be a non-empty string or array"}
FOREIGN_AGENTS = {"error": "Access denied", "message": "One or more agents do not belong to your organisation"}
FOREIGN_AGENT = {"error": "Access denied", "message": "Agent does not belong to your organisation"}
BAD_PAGE = {"error": "Invalid pagination parameters", "message": "Page must be a positive integer and limit must be between 1 and 100"}
ITEM_KEYS = ["id", "name", "created_at", "updated_at", "source", "linked_agents"]


@pytest.fixture
def org(srv):
    """A fresh org on the shared server: (client, agent)."""
    _, client, agent = knowledge_org(srv)
    return client, agent


def rows(srv, sql: str, *args) -> list:
    async def go():
        return [tuple(r) for r in await srv.services.store.fetchall(sql, list(args))]

    return srv.call(go())


def fts_rows(srv, n: int | None = None) -> int:
    """FTS rows in every org's keyword table (of item ``n`` only, when given)."""
    tables = [f"knowledge_fts_{k}" for (k,) in rows(srv, "SELECT k FROM knowledge_keyword_tables")]
    where = "" if n is None else " WHERE rowid = ?"
    return sum(rows(srv, f"SELECT count(*) FROM {table}{where}", *([] if n is None else [n]))[0][0] for table in tables)


def index_rows(srv, item_id: str) -> dict[str, int]:
    """How many rows an item has in each index table (vectors, bits, plain vectors, FTS)."""
    (version,) = rows(srv, "SELECT value FROM knowledge_meta WHERE key = 'version'")[0]
    found = rows(srv, "SELECT n FROM knowledge_items WHERE id = ?", item_id)
    n = found[0][0] if found else -1
    counts = {kind: rows(srv, f"SELECT count(*) FROM knowledge_{kind}_v{version} WHERE {key} = ?", n)[0][0]
              for kind, key in (("vec", "rowid"), ("bits", "n"), ("vectors", "n"))}
    counts["fts"] = fts_rows(srv, n)
    return counts


def search(client, q, **params):
    response = client.get(f"{URL}/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_create_get_list_shapes(org):
    client, agent = org
    second = create_agent(client, name="second")
    created = add_knowledge(client, [agent["id"], second["id"], agent["id"]], "Our premium support includes 24/7 chat and phone support.",
                  name="Premium Support Information", description_to_index_on="Premium support features")
    assert list(created) == ITEM_KEYS
    assert created["name"] == "Premium Support Information" and created["source"] == "api"
    assert created["linked_agents"] == [agent["id"], second["id"]]  # order kept, duplicates dropped
    assert created["created_at"].endswith("Z") and created["created_at"] == created["updated_at"]
    single = add_knowledge(client, agent["id"], "A second item, linked by a plain string id.")  # agent_ids as a string
    assert single["linked_agents"] == [agent["id"]] and single["name"] is None

    got = client.get(f"{URL}/{created['id']}").json()
    assert list(got) == ["id", "name", "content", "created_at", "updated_at", "source", "linked_agents"]
    assert got["content"] == "Our premium support includes 24/7 chat and phone support."
    listed = client.get(URL).json()
    assert [i["id"] for i in listed["knowledge_items"]] == [single["id"], created["id"]]  # newest first
    assert listed["knowledge_items"][1] == created
    assert listed["pagination"] == {"current_page": 1, "limit": 20, "total_count": 2, "total_pages": 1,
                                    "has_next_page": False, "has_previous_page": False}
    only_second = client.get(URL, params={"agent_id": second["id"]}).json()
    assert [i["id"] for i in only_second["knowledge_items"]] == [created["id"]]


def test_authentication_errors(srv, org):
    client, agent = org
    item = add_knowledge(client, agent["id"], "Something to find.")
    for method, path in [("POST", URL), ("GET", URL), ("GET", f"{URL}/search?q=x"), ("GET", f"{URL}/{item['id']}"),
                         ("PATCH", f"{URL}/{item['id']}"), ("DELETE", f"{URL}/{item['id']}")]:
        response = srv.client(key="").request(method, path, json={"content": "x", "agent_ids": agent["id"]})
        assert response.status_code == 401 and response.json() == MISSING_KEY
        response = srv.client(key="fbx_wrong").request(method, path, json={"content": "x", "agent_ids": agent["id"]})
        assert response.status_code == 401 and response.json() == INVALID_KEY
    assert client.get(f"{URL}/{item['id']}").status_code == 200  # nothing was changed or deleted


def test_create_errors_are_documented_and_write_nothing(srv, org):
    client, agent = org
    other_client, other_agent = srv.client(key=srv.new_org("other")[1]), None
    other_agent = create_agent(other_client, name="not yours")
    before = rows(srv, "SELECT count(*) FROM knowledge_items")[0][0]
    cases = [
        ({"agent_ids": agent["id"]}, 400, CONTENT_REQUIRED),
        ({"content": "   ", "agent_ids": agent["id"]}, 400, CONTENT_REQUIRED),
        ({"content": 42, "agent_ids": agent["id"]}, 400, CONTENT_REQUIRED),
        ({"content": "x"}, 400, AGENT_IDS_REQUIRED),
        ({"content": "x", "agent_ids": []}, 400, AGENT_IDS_REQUIRED),
        ({"content": "x", "agent_ids": ""}, 400, AGENT_IDS_REQUIRED),
        ({"content": "x", "agent_ids": [agent["id"], 7]}, 400, AGENT_IDS_REQUIRED),
        ({"content": "x", "agent_ids": {"id": agent["id"]}}, 400, AGENT_IDS_REQUIRED),
        ({"content": "x" * 4001, "agent_ids": agent["id"]}, 400, TOO_LONG),
        ({"content": "x", "agent_ids": agent["id"], "name": ""}, 400,
         {"error": "Validation failed", "message": 'If provided, "name" must be a non-empty string.'}),
        ({"content": "x", "agent_ids": other_agent["id"]}, 403, FOREIGN_AGENTS),
        ({"content": "x", "agent_ids": [agent["id"], "no-such-agent"]}, 403, FOREIGN_AGENTS),
    ]
    for body, status, expected in cases:
        response = client.post(URL, json=body)
        assert (response.status_code, response.json()) == (status, expected), body
    response = client.post(URL, content=b'{"content": "x",', headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "Invalid JSON body"
    # JSON can carry a lone surrogate; UTF-8 (and so SQLite and the tokenizer) cannot
    raw = b'{"content": "half \\ud800 a character", "agent_ids": "%s"}' % agent["id"].encode()
    response = client.post(URL, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json() == {
        "error": "Validation failed", "message": '"content" must be valid Unicode text (it contains a lone surrogate).'}
    assert rows(srv, "SELECT count(*) FROM knowledge_items")[0][0] == before
    # the limit is 4000 characters exactly
    assert add_knowledge(client, agent["id"], ("word " * 800)[:4000])["id"]


def test_pagination_edges(org):
    client, agent = org
    ids = [add_knowledge(client, agent["id"], f"Entry number {i} about topic {i}.")["id"] for i in range(12)]
    page = client.get(URL, params={"page": 2, "limit": 5}).json()
    assert [i["id"] for i in page["knowledge_items"]] == ids[::-1][5:10]
    assert page["pagination"] == {"current_page": 2, "limit": 5, "total_count": 12, "total_pages": 3,
                                  "has_next_page": True, "has_previous_page": True}
    last = client.get(URL, params={"page": 3, "limit": 5}).json()
    assert len(last["knowledge_items"]) == 2 and last["pagination"]["has_next_page"] is False
    beyond = client.get(URL, params={"page": 9, "limit": 5}).json()
    assert beyond["knowledge_items"] == [] and beyond["pagination"]["has_previous_page"] is True
    assert client.get(URL, params={"limit": 100}).json()["pagination"]["total_pages"] == 1
    for params in ({"page": 0}, {"page": -1}, {"page": "abc"}, {"page": "1.5"}, {"limit": 0}, {"limit": 101}, {"limit": "ten"}):
        response = client.get(URL, params=params)
        assert (response.status_code, response.json()) == (400, BAD_PAGE), params


def test_list_filter_by_foreign_agent_is_403(srv, org):
    client, agent = org
    other_client = srv.client(key=srv.new_org("other")[1])
    foreign = create_agent(other_client, name="theirs")
    for agent_id in (foreign["id"], "no-such-agent"):
        response = client.get(URL, params={"agent_id": agent_id})
        assert (response.status_code, response.json()) == (403, FOREIGN_AGENT)


def test_patch_reembeds_when_indexed_text_changes(srv, org):
    client, agent = org
    item = add_knowledge(client, agent["id"], "The cafeteria serves lentil soup every Tuesday.", name="Menu")
    add_knowledge(client, agent["id"], "Parking permits are issued by the front desk.")
    hash_of = lambda: rows(srv, "SELECT hash FROM knowledge_vectors_v1 v JOIN knowledge_items i ON i.n = v.n WHERE i.id = ?", item["id"])[0][0]  # noqa: E731
    first_hash = hash_of()

    renamed = client.patch(f"{URL}/{item['id']}", json={"name": "Weekly menu"}).json()
    renamed_hash = hash_of()
    assert renamed["name"] == "Weekly menu" and renamed_hash != first_hash  # the name is embedded with the text
    assert renamed["updated_at"] >= renamed["created_at"]

    response = client.patch(f"{URL}/{item['id']}", json={"content": "Bicycles may be stored in the basement garage."})
    assert response.status_code == 200 and list(response.json()) == ITEM_KEYS
    assert hash_of() not in (first_hash, renamed_hash)
    bike = search(client, "where can I keep my bike")
    assert bike[0]["id"] == item["id"]
    # the old text's vector is gone: soup is now further from the item than bikes are, by a wide margin
    soup = {r["id"]: r["similarity"] for r in search(client, "lentil soup on tuesday", mode="vector")}
    assert soup[item["id"]] < bike[0]["similarity"] - 0.05, (soup, bike[0])
    assert index_rows(srv, item["id"]) == {"vec": 1, "bits": 1, "vectors": 1, "fts": 1}  # replaced, not added

    # a description is embedded instead of the content; a later content change drops it (documented)
    client.patch(f"{URL}/{item['id']}", json={"description_to_index_on": "volcano eruption safety drill"})
    assert search(client, "volcano", mode="vector")[0]["id"] == item["id"]
    client.patch(f"{URL}/{item['id']}", json={"content": "Bicycles may be stored in the basement garage. Helmets too."})
    assert rows(srv, "SELECT description_to_index_on FROM knowledge_items WHERE id = ?", item["id"])[0][0] is None
    assert client.get(f"{URL}/{item['id']}").json()["name"] == "Weekly menu"


def test_patch_errors(srv, org):
    client, agent = org
    item = add_knowledge(client, agent["id"], "Original content.")
    foreign = create_agent(srv.client(key=srv.new_org("other")[1]), name="theirs")
    cases = [
        ({"name": ""}, 400, {"error": "Validation failed", "message": 'If provided, "name" must be a non-empty string.'}),
        ({"name": 5}, 400, {"error": "Validation failed", "message": 'If provided, "name" must be a non-empty string.'}),
        ({"content": "z" * 4001}, 400, TOO_LONG),
        ({"agent_ids": [foreign["id"]]}, 403, FOREIGN_AGENTS),
    ]
    for body, status, expected in cases:
        response = client.patch(f"{URL}/{item['id']}", json=body)
        assert (response.status_code, response.json()) == (status, expected), body
    response = client.patch(f"{URL}/{item['id']}", content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "Invalid JSON body"
    response = client.patch(f"{URL}/no-such-item", json={"name": "x"})
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    got = client.get(f"{URL}/{item['id']}").json()
    assert got["content"] == "Original content." and got["linked_agents"] == [agent["id"]]
    # relinking to several agents of the org works
    second = create_agent(client, name="second")
    assert client.patch(f"{URL}/{item['id']}", json={"agent_ids": [second["id"], agent["id"]]}).json()["linked_agents"] == [second["id"], agent["id"]]


def test_delete_leaves_no_stale_vectors(srv, org):
    client, agent = org
    item = add_knowledge(client, agent["id"], "The secret handshake is two taps and a wave.")
    keep = add_knowledge(client, agent["id"], "The vending machine accepts coins only.")
    assert index_rows(srv, item["id"]) == {"vec": 1, "bits": 1, "vectors": 1, "fts": 1}
    n = rows(srv, "SELECT n FROM knowledge_items WHERE id = ?", item["id"])[0][0]
    response = client.delete(f"{URL}/{item['id']}")
    assert response.status_code == 200 and response.json() == {"message": "Knowledge item deleted successfully"}
    for table, key in (("knowledge_vec_v1", "rowid"), ("knowledge_bits_v1", "n"), ("knowledge_vectors_v1", "n"),
                       ("knowledge_links", "item_n")):
        assert rows(srv, f"SELECT count(*) FROM {table} WHERE {key} = ?", n)[0][0] == 0
    assert fts_rows(srv, n) == 0
    assert item["id"] not in [r["id"] for r in search(client, "secret handshake")]
    for method in ("GET", "DELETE"):
        response = client.request(method, f"{URL}/{item['id']}")
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert client.get(f"{URL}/{keep['id']}").status_code == 200


def test_org_isolation(srv, org):
    client, agent = org
    item = add_knowledge(client, agent["id"], "Launch codes are kept in the blue binder.")
    other = srv.client(key=srv.new_org("other")[1])
    create_agent(other, name="theirs")
    for method in ("GET", "PATCH", "DELETE"):
        response = other.request(method, f"{URL}/{item['id']}", json={"name": "stolen"})
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert other.get(URL).json()["knowledge_items"] == []
    assert search(other, "launch codes blue binder") == []
    response = other.get(f"{URL}/search", params={"q": "launch codes", "agent_id": agent["id"]})
    assert (response.status_code, response.json()) == (403, FOREIGN_AGENT)
    assert client.get(f"{URL}/{item['id']}").json()["name"] is None  # untouched
    # nor do another org's entries move our scores: BM25 counts words and documents org by org
    for thing, place in [("Spare keys", "red drawer"), ("Torches", "hall cupboard"), ("Maps", "map room"), ("Tools", "shed")]:
        add_knowledge(client, agent["id"], f"{thing} are in the {place}.")
    before = search(client, "launch codes binder", mode="keyword")
    assert before[0]["id"] == item["id"] and before[0]["score"] > 0.1
    theirs = create_agent(other, name="theirs too")
    for i in range(8):
        add_knowledge(other, theirs["id"], f"Binder {i} holds the launch codes of silo {i}.")
    after = search(client, "launch codes binder", mode="keyword")
    assert [(r["id"], r["score"], r["relevance"]) for r in after] == [(r["id"], r["score"], r["relevance"]) for r in before]


def test_search_hybrid_scores_and_agent_scope(srv, org):
    client, agent = org
    other_agent = create_agent(client, name="other agent")
    refunds = add_knowledge(client, agent["id"], "Refunds are accepted within 30 days of purchase with the original receipt.")
    shipping = add_knowledge(client, agent["id"], "Orders ship from the Rotterdam warehouse within two business days.")
    hidden = add_knowledge(client, other_agent["id"], "Refund requests for enterprise contracts go to the account manager.")
    results = search(client, "can I get my money back", limit=3)
    assert results[0]["id"] in (refunds["id"], hidden["id"])
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert set(results[0]) == {"id", "name", "content", "source", "score", "similarity", "relevance"}
    scoped = search(client, "refund", agent_id=agent["id"], limit=5)
    assert {r["id"] for r in scoped} == {refunds["id"], shipping["id"]}  # only the agent's entries
    assert scoped[0]["id"] == refunds["id"]
    keyword = search(client, "Rotterdam", mode="keyword")
    assert [r["id"] for r in keyword] == [shipping["id"]]
    for params, message in [({"q": ""}, '"q" is required and must be a non-empty string.'),
                            ({"q": "x", "limit": 0}, '"limit" must be an integer between 1 and 50.'),
                            ({"q": "x", "mode": "magic"}, '"mode" must be one of: hybrid, vector, keyword.')]:
        response = client.get(f"{URL}/search", params=params)
        assert (response.status_code, response.json()) == (400, {"error": "Validation failed", "message": message})


def test_usage_limit_is_402(srv, org):
    client, agent = org
    add_knowledge(client, agent["id"], "First allowed item.")
    services = srv.services
    original = services.config
    services.config = original.replace(knowledge_max_items=1)
    try:
        response = client.post(URL, json={"content": "One too many.", "agent_ids": agent["id"]})
    finally:
        services.config = original
    assert response.status_code == 402
    assert response.json() == {
        "error": "Usage limit reached",
        "message": "You have reached the maximum number of items in one of your knowledge bases. Please upgrade your plan to add more items.",
        "minimalPlan": "unlimited",
    }
    assert client.get(URL).json()["pagination"]["total_count"] == 1


def test_item_and_vectors_commit_together(srv, org):
    """A failure while writing the vectors rolls back the item too: nothing half-written."""
    client, agent = org
    add_knowledge(client, agent["id"], "Makes sure the index exists.")
    before = rows(srv, "SELECT count(*) FROM knowledge_items")[0][0]
    fts_before = fts_rows(srv)

    async def trigger(sql):
        async with srv.services.store.write() as tx:
            await tx.execute(sql)

    srv.call(trigger("CREATE TRIGGER fail_vectors BEFORE INSERT ON knowledge_vectors_v1 BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
    try:
        response = client.post(URL, json={"content": "This write fails half-way.", "agent_ids": agent["id"]})
    finally:
        srv.call(trigger("DROP TRIGGER fail_vectors"))
    assert response.status_code == 500 and response.json() == {"error": "Internal server error"}
    assert rows(srv, "SELECT count(*) FROM knowledge_items")[0][0] == before
    assert fts_rows(srv) == fts_before
    assert rows(srv, "SELECT count(*) FROM knowledge_items WHERE content = 'This write fails half-way.'")[0][0] == 0


def test_deleting_an_agent_unlinks_its_items(srv, org):
    client, agent = org
    item = add_knowledge(client, agent["id"], "Linked to an agent that goes away.")
    assert client.delete(f"/api/public/agent/{agent['id']}").status_code == 200
    assert client.get(f"{URL}/{item['id']}").json()["linked_agents"] == []
