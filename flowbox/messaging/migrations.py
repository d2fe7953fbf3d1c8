"""Messaging schema (sqlite-utils migrations). Append new ones; never edit an applied one."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("flowbox.messaging")


@migrations()
def m001_messaging(db):
    db.executescript(
        """
        CREATE TABLE msg_projects (
            id TEXT PRIMARY KEY,                 -- projectId
            org_id TEXT NOT NULL REFERENCES orgs(id),
            name TEXT NOT NULL,
            client_id TEXT NOT NULL UNIQUE,      -- what socket clients present
            token_hash TEXT NOT NULL UNIQUE,     -- REST/management bearer token, SHA-256
            token_prefix TEXT NOT NULL,
            webhook_url TEXT,
            webhook_verify_token TEXT,
            agent_id TEXT,                       -- Agents-API agent answering UNKNOWN, or NULL
            business_hours TEXT NOT NULL DEFAULT '[]',
            outside_hours_event TEXT,            -- event fired for messages outside business hours
            intent_threshold REAL,               -- NULL: the server setting
            flows_version INTEGER NOT NULL DEFAULT 0,   -- bumped on every flow change (caches key on it)
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX msg_projects_org ON msg_projects(org_id);
        CREATE TABLE msg_flows (
            id TEXT PRIMARY KEY,                 -- flowId
            project_id TEXT NOT NULL REFERENCES msg_projects(id) ON DELETE CASCADE,
            title TEXT NOT NULL,
            doc TEXT NOT NULL,                   -- the Flow object, JSON
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX msg_flows_project ON msg_flows(project_id);
        CREATE TABLE msg_threads (
            project_id TEXT NOT NULL REFERENCES msg_projects(id) ON DELETE CASCADE,
            thread_id TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT '{}',    -- engine state: current step, pending slot, params
            paused INTEGER NOT NULL DEFAULT 0,
            paused_until TEXT,                   -- NULL: until resumed
            originator TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (project_id, thread_id)
        ) WITHOUT ROWID;
        CREATE TABLE msg_messages (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            sender TEXT NOT NULL,                -- user, bot, moderator
            trace_id TEXT,                       -- JSON (a number or a string)
            originator TEXT NOT NULL,            -- JSON
            message TEXT NOT NULL,               -- JSON message object (fallback, responses, ...)
            created_at TEXT NOT NULL,
            UNIQUE (project_id, thread_id, seq),
            FOREIGN KEY (project_id, thread_id) REFERENCES msg_threads(project_id, thread_id) ON DELETE CASCADE
        );
        -- Uploaded media, served at /rest/v1/media/<id> (the id is the capability).
        CREATE TABLE msg_media (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL REFERENCES msg_projects(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            mimetype TEXT NOT NULL,
            size INTEGER NOT NULL,
            path TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        -- Example embeddings, shared by every project and flow version: an edit re-embeds only new text.
        CREATE TABLE msg_embeddings (
            model TEXT NOT NULL,
            text_hash TEXT NOT NULL,
            vector BLOB NOT NULL,                -- float32
            PRIMARY KEY (model, text_hash)
        ) WITHOUT ROWID;
        """
    )


@migrations()
def m002_socket_threads(db):
    db.executescript(
        """
        -- What the socket channel knows of a thread: the SDK client that owns it and what the user has seen.
        CREATE TABLE msg_socket_threads (
            project_id TEXT NOT NULL REFERENCES msg_projects(id) ON DELETE CASCADE,
            thread_id TEXT NOT NULL,
            secret_hash TEXT,                    -- SHA-256 of the owning SDK client's secret; NULL: no owner
            noticed_seq INTEGER NOT NULL DEFAULT 0,   -- the last message the user has seen (thread.noticed)
            created_at TEXT NOT NULL,
            PRIMARY KEY (project_id, thread_id)
        ) WITHOUT ROWID;
        CREATE INDEX msg_socket_threads_secret ON msg_socket_threads(secret_hash);
        """
    )


@migrations()
def m003_flow_ids_per_project(db):
    # A flowId is unique within its project, not across the server: one org can neither learn that
    # another's flowId exists nor take it. Rebuilt (SQLite cannot change a primary key), rowids kept:
    # flows list in creation order.
    db.executescript(
        """
        CREATE TABLE msg_flows_new (
            id TEXT NOT NULL,                    -- flowId, unique within the project
            project_id TEXT NOT NULL REFERENCES msg_projects(id) ON DELETE CASCADE,
            title TEXT NOT NULL,
            doc TEXT NOT NULL,                   -- the Flow object, JSON
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (project_id, id)
        );
        INSERT INTO msg_flows_new (rowid, id, project_id, title, doc, created_at, updated_at)
            SELECT rowid, id, project_id, title, doc, created_at, updated_at FROM msg_flows;
        DROP TABLE msg_flows;
        ALTER TABLE msg_flows_new RENAME TO msg_flows;
        """
    )


@migrations()
def m004_media_per_project(db):
    # The per-project quota sums a project's sizes; the retention sweep looks for the oldest.
    db.executescript(
        """
        CREATE INDEX msg_media_project ON msg_media(project_id);
        CREATE INDEX msg_media_created ON msg_media(created_at);
        """
    )


@migrations()
def m005_intent_models(db):
    db.executescript(
        """
        -- Each project's learned intent model (messaging/intents.py), for the flow version whose
        -- examples hash to data_hash; trained in the background, so a restart trains nothing.
        CREATE TABLE msg_intent_models (
            project_id TEXT PRIMARY KEY REFERENCES msg_projects(id) ON DELETE CASCADE,
            data_hash TEXT NOT NULL,             -- SHA-1 of the embedding model and every intent's examples
            model TEXT NOT NULL,                 -- JSON: feature weights and scaling
            created_at TEXT NOT NULL
        ) WITHOUT ROWID;
        """
    )
