"""The knowledge base: items an org stores and links to agents, embedded and indexed in the same
SQLite file (sqlite-vec vectors + FTS5), searched by hybrid retrieval, used by agents.

- ``store.py``: items, validation with the documented errors, the one write path, search.
- ``index.py``: vector and BM25 tables, two-stage vector search, fusion and relevance.
- ``chunking.py`` / ``importer.py``: documents split into entries; idempotent bulk import.
- ``agent_tools.py``: the agents' ``knowledge_search`` tool and retrieved context.
- ``api.py`` (HTTP) and ``cli.py`` (``flowbox knowledge ...``) are thin layers over these.
"""
