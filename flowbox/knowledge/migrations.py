"""Schema of the knowledge base (its own sqlite-utils migration set).

The vector tables are not here: their dimension belongs to the embedding model, so
``index.py`` creates them (``knowledge_vec_v<N>`` and friends) for the model in use and
``flowbox knowledge reembed`` builds a new version when the model changes.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("flowbox.knowledge")


@migrations()
def m001_knowledge(db):
    db.executescript(
        """
        CREATE TABLE knowledge_items (
            n INTEGER PRIMARY KEY,              -- the rowid of the item's vectors and FTS row
            id TEXT NOT NULL UNIQUE,
            org_id TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            name TEXT,
            content TEXT NOT NULL,
            description_to_index_on TEXT,
            source TEXT NOT NULL DEFAULT 'api', -- api, cli, import
            source_key TEXT,                    -- imports: "<absolute path>#<part>", for re-import
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX knowledge_items_org ON knowledge_items(org_id, source, created_at);
        CREATE UNIQUE INDEX knowledge_items_source_key ON knowledge_items(org_id, source_key)
            WHERE source_key IS NOT NULL;
        CREATE TABLE knowledge_links (
            item_n INTEGER NOT NULL REFERENCES knowledge_items(n) ON DELETE CASCADE,
            agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            pos INTEGER NOT NULL,               -- keeps linked_agents in the order given
            PRIMARY KEY (item_n, agent_id)
        ) WITHOUT ROWID;
        CREATE INDEX knowledge_links_agent ON knowledge_links(agent_id, item_n);
        -- BM25 over the same text; contentless (the text lives in knowledge_items).
        CREATE VIRTUAL TABLE knowledge_fts USING fts5(
            name, body, content='', contentless_delete=1,
            tokenize='porter unicode61 remove_diacritics 2'
        );
        -- model, dim, version of the current vector index
        CREATE TABLE knowledge_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- bumped by every write to an org's vectors: searches reload cached bits when it moves
        CREATE TABLE knowledge_generations (org_id TEXT PRIMARY KEY, generation INTEGER NOT NULL);
        """
    )


@migrations()
def m002_keyword_table_per_org(db):
    """BM25 per org: each org's FTS rows move from the shared ``knowledge_fts`` to a table of its own
    (``index.fts_table``), rebuilt from the items' text as ``store.save_items`` writes it."""
    from .index import write_fts
    from .store import fts_body

    db.execute("CREATE TABLE knowledge_keyword_tables (k INTEGER PRIMARY KEY, org_id TEXT NOT NULL UNIQUE REFERENCES orgs(id) ON DELETE CASCADE)")
    for (org_id,) in db.execute("SELECT DISTINCT org_id FROM knowledge_items ORDER BY org_id").fetchall():
        rows = db.execute("SELECT n, name, content, description_to_index_on FROM knowledge_items WHERE org_id = ?", [org_id]).fetchall()
        write_fts(db.conn, org_id, [(n, name, fts_body({"content": content, "description_to_index_on": description}))
                                    for n, name, content, description in rows])
    db.execute("DROP TABLE knowledge_fts")
