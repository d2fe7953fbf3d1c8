"""Core schema, as named migrations (sqlite-utils). Append new ones; never edit an applied one.

Each area package (knowledge, messaging, chats, ...) keeps its own migration set and declares it
in its ``Area``. This set, declared by the core area, also holds the agents' tables.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("flowbox")


@migrations()
def m001_core(db):
    db.executescript(
        """
        CREATE TABLE orgs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            credits REAL,               -- NULL: unlimited
            created_at TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,        -- shown in listings, never enough to authenticate
            key_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            instructions TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT 'local',
            temperature REAL NOT NULL DEFAULT 0.2,
            max_tokens INTEGER,
            tools TEXT NOT NULL DEFAULT '[]',   -- JSON list of tool names
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX agents_org ON agents(org_id);
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,              -- JSON: a string or a list of content parts
            created_at TEXT NOT NULL,
            UNIQUE(thread_id, seq)
        );
        -- One row per agent call: the usage ledger and the record of async runs.
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            agent_id TEXT NOT NULL,
            thread_id TEXT,
            status TEXT NOT NULL,               -- processing, completed, error
            model TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            credits REAL NOT NULL DEFAULT 0,
            callback_url TEXT,
            request TEXT,                       -- JSON of the accepted request (for async runs)
            response TEXT,                      -- JSON of the result
            error TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX runs_agent_day ON runs(agent_id, created_at);
        CREATE INDEX runs_status ON runs(status);
        """
    )


@migrations()
def m002_run_attempts(db):
    # How often an async run was started: one that took the model (or the server) down twice is
    # failed instead of being resumed forever.
    db.execute("ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")


@migrations()
def m003_threads_per_agent(db):
    """Thread ids may be chosen by clients, so a thread is keyed by (agent_id, id): two agents using
    the same id have two threads. Messages name their thread by both columns."""
    db.executescript(
        """
        CREATE TABLE threads_new (
            id TEXT NOT NULL,                   -- chosen by the client or a new UUID
            org_id TEXT NOT NULL REFERENCES orgs(id),
            agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (agent_id, id)
        );
        INSERT INTO threads_new (id, org_id, agent_id, created_at, updated_at)
            SELECT id, org_id, agent_id, created_at, updated_at FROM threads;
        CREATE TABLE messages_new (
            id TEXT PRIMARY KEY,
            agent_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,              -- JSON: a string or a list of content parts
            created_at TEXT NOT NULL,
            UNIQUE(agent_id, thread_id, seq),
            FOREIGN KEY (agent_id, thread_id) REFERENCES threads_new(agent_id, id) ON DELETE CASCADE
        );
        INSERT INTO messages_new (id, agent_id, thread_id, seq, role, content, created_at)
            SELECT m.id, t.agent_id, m.thread_id, m.seq, m.role, m.content, m.created_at
            FROM messages m JOIN threads t ON t.id = m.thread_id;
        DROP TABLE messages;
        DROP TABLE threads;
        -- renaming rewrites messages_new's foreign key to name "threads"
        ALTER TABLE threads_new RENAME TO threads;
        ALTER TABLE messages_new RENAME TO messages;
        """
    )


@migrations()
def m004_model_registry(db):
    """Local models added by name (``flowbox models add``, models/registry.py): the file, what its GGUF
    header says, and its own load settings (NULL or '': the global setting)."""
    db.executescript(
        """
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL,                 -- absolute path of the GGUF file
            size INTEGER NOT NULL,              -- bytes; also the memory estimate (models_memory_mb)
            sha256 TEXT NOT NULL,
            parameters INTEGER NOT NULL,
            quantization TEXT NOT NULL,
            context_length INTEGER,             -- what the model was trained for (the header's)
            chat_template INTEGER NOT NULL,     -- 1: the file carries a chat template
            n_ctx INTEGER,
            threads INTEGER,
            gpu_layers INTEGER,
            chat_format TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',    -- the URL it was downloaded from
            added_at TEXT NOT NULL
        );
        """
    )
