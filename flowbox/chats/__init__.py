"""The Chats API (``chats-api.md``): flows of agents (AutoGen-style group chats) started as chats,
run in the background, steered with human input, watched over WebSocket and SSE.

- ``flows.py``: flow definitions (validation, CRUD, import/export)
- ``store.py``: chats and their messages in SQLite
- ``engine.py``: the group-chat loop (speaker selection, human input, termination, resume)
- ``live.py``: in-process fan-out of a chat's events to streams
- ``auth.py``: X-API-KEY and OAuth2 client-credentials bearer tokens
- ``api.py``: the HTTP routes; ``cli.py``: ``flowbox chatflows`` and ``flowbox chats``
"""
