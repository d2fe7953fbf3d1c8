"""The OpenAI-compatible API with the real ``openai`` package against a real server on 127.0.0.1,
with the real local model; and the Agents API's opt-in event stream."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import openai
import pytest

from flowbox import usage
from tests.helpers import create_agent, eventually

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server


@pytest.fixture(scope="module")
def oai(srv):
    with openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key=srv.key, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def calc_agent(srv):
    return create_agent(srv.client(), name="calc", instructions="You are a helpful assistant. Answer in one short sentence.",
                        max_tokens=24, tools=["calculator"])


def runs(srv, **where) -> list[dict]:
    clause = " AND ".join(f"{k} = ?" for k in where) or "1"

    async def go():
        return [dict(r) for r in await srv.services.store.fetchall(f"SELECT * FROM runs WHERE {clause} ORDER BY created_at", list(where.values()))]

    return srv.call(go())


def scheduler(srv):
    return srv.local_model().scheduler


def post(srv, path: str, body, key: str | None = None, **headers) -> httpx.Response:
    auth = {"Authorization": f"Bearer {srv.key if key is None else key}"} if key != "" else {}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{srv.base_url}{path}", content=content, headers={**auth, "Content-Type": "application/json", **headers},
                      timeout=120)


def openai_error(response: httpx.Response, status: int, param=None, code=None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 429 else error["type"])
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error["message"]


# -- models and auth ---------------------------------------------------------------------------------

def test_models_list_agents_and_raw_models_per_org(srv, oai, calc_agent):
    listed = {m.id: m for m in oai.models.list().data}
    assert calc_agent["id"] in listed and listed[calc_agent["id"]].model_extra["name"] == "calc"
    assert {"local", "all-minilm-l6-v2"} <= set(listed)
    assert oai.models.retrieve(calc_agent["id"]).owned_by == "flowbox-agent"
    other_org, other_key = srv.new_org("elsewhere")
    with openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key=other_key, max_retries=0) as other:
        assert calc_agent["id"] not in {m.id for m in other.models.list().data}
        with pytest.raises(openai.NotFoundError):  # another org's agent is no model of theirs
            other.chat.completions.create(model=calc_agent["id"], messages=[{"role": "user", "content": "hi"}])
    with openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="fbx_wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.models.list()
        assert caught.value.code == "invalid_api_key"
    response = httpx.get(f"{srv.base_url}/v1/models")
    assert "Authorization: Bearer" in openai_error(response, 401)


# -- agents as models ---------------------------------------------------------------------------------

def test_agent_chat_runs_its_tools_and_is_counted_and_threaded(srv, oai, calc_agent):
    before = len(runs(srv, agent_id=calc_agent["id"]))
    raw = oai.chat.completions.with_raw_response.create(
        model="calc", messages=[{"role": "user", "content": "What is 37 * 41?"}])  # by unambiguous name
    completion = raw.parse()
    thread_id = raw.headers["x-flowbox-thread"]
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    extra = completion.model_extra["flowbox"]
    assert extra["thread_id"] == thread_id
    # the agent's own tool ran server-side
    assert [(c["toolName"], c["result"]["result"]) for c in extra["tool_calls"]] == [("calculator", 1517)]
    ledger = runs(srv, agent_id=calc_agent["id"])
    assert len(ledger) == before + 1 and ledger[-1]["id"] == extra["run_id"] and ledger[-1]["credits"] == extra["used_credits"] >= 1
    assert ledger[-1]["prompt_tokens"] == completion.usage.prompt_tokens and ledger[-1]["completion_tokens"] == completion.usage.completion_tokens

    # the header continues the stored thread: only the new message is sent
    again = oai.chat.completions.with_raw_response.create(
        model=calc_agent["id"], messages=[{"role": "user", "content": "Thanks!"}], max_tokens=8,
        extra_headers={"X-Flowbox-Thread": thread_id})
    assert again.headers["x-flowbox-thread"] == thread_id
    stored = srv.client().get(f"/api/public/agent/{calc_agent['id']}/threads/{thread_id}").json()["messages"]
    assert stored[0]["content"] == "What is 37 * 41?" and stored[-2]["content"] == "Thanks!"
    assert stored[-1]["content"] == again.parse().choices[0].message.content
    response = post(srv, "/v1/chat/completions", {"model": calc_agent["id"], "messages": [{"role": "user", "content": "hi"}],
                                                  "metadata": {"thread_id": "no-such-thread"}})
    openai_error(response, 404, code="thread_not_found")


def test_agent_stream_sends_tokens_as_they_come(srv, oai):
    # long enough (64 tokens, half a second or more here) that a test thread kept off the CPU for a while on a
    # busy machine still reads some tokens well before the last: 20 once arrived within 6 ms of each other
    agent = create_agent(srv.client(), name="storyteller", instructions="You tell stories.", max_tokens=64)
    started = time.perf_counter()
    arrivals, pieces, finish, usage_seen = [], [], None, None
    with oai.chat.completions.create(model=agent["id"], stream=True, stream_options={"include_usage": True},
                                     messages=[{"role": "user", "content": "Tell me about a dragon."}]) as stream:
        for chunk in stream:
            if chunk.usage:
                usage_seen = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    arrivals.append(time.perf_counter() - started)
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
    assert finish == "length" and usage_seen.completion_tokens == 64
    assert len(pieces) >= 5 and arrivals[-1] - arrivals[0] > 0.05  # token by token, not all at the end
    [run] = runs(srv, agent_id=agent["id"])
    thread = srv.client().get(f"/api/public/agent/{agent['id']}/threads/{run['thread_id']}").json()["messages"]
    assert thread[-1]["content"] == "".join(pieces).strip()
    assert run["completion_tokens"] == usage_seen.completion_tokens


def test_knowledge_backed_answer(srv, oai):
    agent = create_agent(srv.client(), name="support", instructions="Answer from the knowledge provided.", max_tokens=24)
    added = srv.client().post("/api/public/knowledge", json={
        "name": "Door code", "content": "The office door code is 4417.", "agent_ids": [agent["id"]]})
    assert added.status_code == 200, added.text
    completion = oai.chat.completions.create(model=agent["id"], messages=[{"role": "user", "content": "What is the office door code?"}])
    searches = [c for c in completion.model_extra["flowbox"]["tool_calls"] if c["toolName"] == "knowledge_search"]
    assert searches and "4417" in searches[0]["result"]["results"][0]["content"]
    assert "4417" in completion.choices[0].message.content


# -- caller-side tools --------------------------------------------------------------------------------

def test_caller_tool_round_trip_on_the_local_model(srv, oai):
    messages = [{"role": "user", "content": "Is it raining in London?"}]
    first = oai.chat.completions.create(model="local", messages=messages, tools=[WEATHER], max_tokens=24, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "London"}
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Heavy rain, 12 degrees."}]
    second = oai.chat.completions.create(model="local", messages=messages, tools=[WEATHER], max_tokens=24, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length") and second.choices[0].message.content
    assert not second.choices[0].message.tool_calls
    assert len(runs(srv, agent_id="model:local")) >= 2  # raw models are in the ledger too

    # a forced call: the reply is constrained to the tool's arguments
    forced = oai.chat.completions.create(model="local", messages=[{"role": "user", "content": "Tell me about Rome."}],
                                         tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                         max_tokens=24)
    [call] = forced.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)


def test_caller_tool_on_an_agent_continues_its_thread(srv, oai):
    agent = create_agent(srv.client(), name="weather agent", instructions="You help with travel.", max_tokens=24)
    raw = oai.chat.completions.with_raw_response.create(
        model=agent["id"], messages=[{"role": "user", "content": "Is it raining in London?"}], tools=[WEATHER], stream=True)
    thread_id = raw.headers["x-flowbox-thread"]
    calls = [tc for chunk in raw.parse() for choice in chunk.choices for tc in (choice.delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    final = oai.chat.completions.create(
        model=agent["id"], messages=[{"role": "tool", "tool_call_id": calls[0].id, "content": "Heavy rain, 12 degrees."}],
        tools=[WEATHER], metadata={"thread_id": thread_id})
    assert final.choices[0].message.content and final.model_extra["flowbox"]["thread_id"] == thread_id
    stored = srv.client().get(f"/api/public/agent/{agent['id']}/threads/{thread_id}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["content"][0]["toolName"] == "get_weather" and stored[2]["content"][0]["result"] == "Heavy rain, 12 degrees."


# -- embeddings ---------------------------------------------------------------------------------------

def test_embeddings(srv, oai):
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Quarterly tax filing deadlines"]
    result = oai.embeddings.create(model="all-minilm-l6-v2", input=texts)  # the SDK asks for base64
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert result.usage.prompt_tokens > 10
    plain = post(srv, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": texts[0], "encoding_format": "float"}).json()
    assert np.allclose(plain["data"][0]["embedding"], vectors[0], atol=1e-3)  # alone vs in a batch: float noise
    b64 = post(srv, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": texts[0], "encoding_format": "base64"}).json()
    assert np.allclose(np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4"), plain["data"][0]["embedding"], atol=1e-6)
    openai_error(post(srv, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": [[1, 2, 3]]}), 400, "input")
    openai_error(post(srv, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}), 404, code="model_not_found")


# -- disconnects --------------------------------------------------------------------------------------

def test_disconnect_mid_stream_frees_the_model_at_once(srv, oai):
    before = len(runs(srv, agent_id="model:local"))
    stream = oai.chat.completions.create(model="local", stream=True, max_tokens=400, temperature=0,
                                         messages=[{"role": "user", "content": "Count from 1 to 300, separated by commas."}])
    seen = 0
    for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen >= 3:
            break
    assert scheduler(srv).busy  # still generating: 400 tokens take many seconds
    stream.close()
    closed = time.perf_counter()
    eventually(lambda: not scheduler(srv).busy, "the model freed", timeout=10, interval=0.01)
    freed = time.perf_counter() - closed
    assert freed < 1.0, f"the model was busy {freed:.2f} s after the client left"
    started = time.perf_counter()
    oai.chat.completions.create(model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert time.perf_counter() - started < 10
    assert len(runs(srv, agent_id="model:local")) == before + 1  # the abandoned call is not charged


def test_disconnect_from_the_agents_api_stream_stops_the_turn(srv):
    agent = create_agent(srv.client(), name="counter", instructions="You count.", max_tokens=400, temperature=0)
    client = srv.client()
    with client.stream("POST", f"/api/public/agent/{agent['id']}/chat", headers={"Accept": "text/event-stream"},
                       json={"messages": "Count from 1 to 300, separated by commas."}) as response:
        deltas = 0
        for name, _ in sse_events(response):
            deltas += name == "delta"
            if deltas >= 3:
                break
        assert scheduler(srv).busy
    closed = time.perf_counter()
    eventually(lambda: not scheduler(srv).busy, "the model freed", timeout=10, interval=0.01)
    assert time.perf_counter() - closed < 1.0
    assert runs(srv, agent_id=agent["id"]) == []  # an interrupted turn leaves no trace


# -- the Agents API's opt-in stream -------------------------------------------------------------------

def sse_events(response: httpx.Response):
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])
            name = None


def test_agents_api_chat_streams_on_request(srv, calc_agent):
    client = srv.client()
    path = f"/api/public/agent/{calc_agent['id']}/chat"
    with client.stream("POST", path, json={"messages": "What is 12 * 7?"}, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    names = [name for name, _ in events]
    assert names[-1] == "done" and "delta" in names and names.index("tool") < names.index("delta")
    tool = next(data for name, data in events if name == "tool")
    assert tool["toolName"] == "calculator" and tool["result"]["result"] == 84
    final = events[-1][1]
    assert final["statusCode"] == 200 and set(final["body"]) == {"agent_id", "conversation_history", "metadata"}
    assert final["body"]["metadata"]["tool_calls"] == {tool["toolCallId"]: {k: v for k, v in tool.items() if k != "toolCallId"}}
    reply = final["body"]["conversation_history"][-1]["content"]
    assert reply == "".join(data["text"] for name, data in events if name == "delta").strip()
    thread_id = final["body"]["metadata"]["thread_id"]
    stored = client.get(f"/api/public/agent/{calc_agent['id']}/threads/{thread_id}").json()["messages"]
    assert stored == final["body"]["conversation_history"]
    # without the header: the documented JSON response, unchanged
    plain = client.post(path, json={"messages": "Hi", "thread_id": thread_id})
    assert plain.headers["content-type"].startswith("application/json") and plain.json()["statusCode"] == 200
    # errors before the stream starts keep their documented status and body
    missing = client.post("/api/public/agent/no-such-agent/chat", json={"messages": "hi"}, headers={"Accept": "text/event-stream"})
    assert missing.status_code == 404 and missing.json()["error"] == "Agent not found"


# -- bad input ----------------------------------------------------------------------------------------

def test_bad_input_gets_openai_shaped_4xx(srv, calc_agent):
    user = [{"role": "user", "content": "hi"}]

    def chat(status, body, param=None, code=None, **headers):
        return openai_error(post(srv, "/v1/chat/completions", body, **headers), status, param, code)

    assert "does not exist" in chat(404, {"model": "gpt-4o", "messages": user}, code="model_not_found")
    chat(400, {"model": "local", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "invalid_value")
    chat(400, {"model": "local", "messages": []}, "messages", "empty_array")
    chat(400, {"model": "local"}, "messages", "missing_required_parameter")
    chat(400, {"model": "local", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0].type")
    chat(400, {"model": "local", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[0].tool_call_id")
    chat(400, {"model": "local", "messages": user, "n": 2}, "n", "unsupported_parameter")
    chat(400, {"model": "local", "messages": user, "top_p": 0.5}, "top_p", "unsupported_parameter")
    chat(400, {"model": "local", "messages": user, "functions": []}, "functions", "unsupported_parameter")
    chat(400, {"model": "local", "messages": user, "frobnicate": True}, "frobnicate", "unknown_parameter")
    chat(400, {"model": "local", "messages": user, "temperature": 5}, "temperature")
    chat(400, {"model": "local", "messages": user, "stream_options": {"include_usage": True}}, "stream_options")
    chat(400, {"model": calc_agent["id"], "messages": user, "response_format": {"type": "json_object"}}, "response_format")
    chat(400, {"model": "local", "messages": user}, "metadata.thread_id", **{"X-Flowbox-Thread": "t1"})
    # tool schemas
    bad_tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
    chat(400, {"model": "local", "messages": user, "tools": [bad_tool]}, "tools[0].function.parameters", "invalid_function_parameters")
    bad_tool["function"]["parameters"] = {"type": "object", "properties": {"x": {"type": "strnig"}}}
    assert "Invalid schema" in chat(400, {"model": "local", "messages": user, "tools": [bad_tool]}, "tools[0].function.parameters")
    bad_tool["function"]["parameters"] = {"type": "object", "properties": {"x": {"$ref": "#/$defs/Missing"}}}
    chat(400, {"model": "local", "messages": user, "tools": [bad_tool]}, "tools[0].function.parameters")
    chat(400, {"model": "local", "messages": user, "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
         "tools[0].function.name")
    chat(400, {"model": "local", "messages": user, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
         "tool_choice")
    # over-long context: the documented message with the limit
    long = [{"role": "user", "content": "word " * 6000}]
    message = chat(400, {"model": "local", "messages": long}, "messages", "context_length_exceeded")
    assert message.startswith("This model's maximum context length is 4096 tokens. However, your messages resulted in ")
    chat(400, {"model": calc_agent["id"], "messages": long}, "messages", "context_length_exceeded")
    # transport-level problems
    chat(400, b"{not json", None)
    response = post(srv, "/v1/chat/completions", {"model": "local", "messages": [{"role": "user", "content": "x" * 1_100_000}]})
    openai_error(response, 413)
    # no credits: OpenAI's quota error
    org_id, key = srv.new_org("broke")
    srv.call(usage.set_credits(srv.services.store, org_id, 0))
    response = post(srv, "/v1/chat/completions", {"model": "local", "messages": user}, key=key)
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
    assert runs(srv, org_id=org_id) == []
