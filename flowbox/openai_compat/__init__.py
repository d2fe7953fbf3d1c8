"""OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``, ``/v1/embeddings``), so the
``openai`` SDKs and the tools built on them talk to flowbox agents or the bare local models.

- Auth: ``Authorization: Bearer <flowbox key>``; errors are ``{"error": {"message", "type", "param", "code"}}``.
- ``model``: a raw model name ("local", an added model, a configured remote) first, else an agent of the key's org
  by id, else by name when exactly one agent has it. ``GET /v1/models`` lists both.
- Threads (agents only): ``X-Flowbox-Thread: <thread_id>`` or ``metadata.thread_id`` continues a
  stored thread; the caller then sends only the new messages. Every agent call is stored in a
  thread like an Agents-API chat; its id comes back in the ``X-Flowbox-Thread`` response header and
  in the body's extra ``flowbox`` object (with the run id, credits and internal tool calls).
  ``user`` is accepted and ignored: it names an end user, not a conversation.
- Caller-supplied ``tools`` come back as ``tool_calls`` (finish_reason "tool_calls"); the caller's
  ``role: tool`` messages continue. On agents they sit beside the agent's own tools, which still
  run server-side; ``tool_choice`` "none" withholds the caller's tools only.
"""
