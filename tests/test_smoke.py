from conftest import create_agent


def test_agent_chat_roundtrip(server):
    client = server.client()
    agent = create_agent(client, instructions="Answer briefly.", max_tokens=16)
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hello"})
    assert response.status_code == 200, response.text
    body = response.json()["body"]
    assert body["conversation_history"][0] == {"role": "user", "content": "Hello", "id": body["conversation_history"][0]["id"]}
    assert body["conversation_history"][1]["role"] == "assistant"
