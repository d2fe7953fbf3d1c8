"""Schema of the Chats API area (its own sqlite-utils migration set)."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("flowbox.chats")


@migrations()
def m001_chats(db):
    db.executescript(
        """
        CREATE TABLE chat_flows (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            name TEXT NOT NULL,
            definition TEXT NOT NULL,       -- JSON: agents, speaker_selection, max_rounds, ...
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX chat_flows_org ON chat_flows(org_id);
        CREATE TABLE chats (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            name TEXT NOT NULL,
            from_type TEXT NOT NULL,
            from_flow TEXT NOT NULL,        -- the flow's id (the flow may be deleted later)
            flow TEXT NOT NULL,             -- JSON: the flow's definition when the chat was created
            status TEXT NOT NULL,           -- ready, running, wait_for_human_input, completed, error
            error TEXT,                     -- why the chat is in 'error'
            round INTEGER NOT NULL DEFAULT 0,    -- speaker turns taken in the current conversation
            last_speaker TEXT,
            waiting_for TEXT,               -- the user proxy asked for input
            waiting_reason TEXT,            -- 'turn' or 'termination'
            resumes INTEGER NOT NULL DEFAULT 0,  -- restarts survived by the current run
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX chats_org ON chats(org_id, created_at);
        CREATE INDEX chats_status ON chats(status);
        CREATE TABLE chat_messages (
            id TEXT PRIMARY KEY,
            chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,             -- 'user' (a human) or 'assistant' (an agent)
            sender TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE(chat_id, seq)
        );
        CREATE TABLE oauth_tokens (
            token_hash TEXT PRIMARY KEY,    -- SHA-256 of the token; the token itself is never stored
            key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            created_at TEXT NOT NULL,
            expires_at REAL NOT NULL        -- unix time
        );
        CREATE INDEX oauth_tokens_expiry ON oauth_tokens(expires_at);
        """
    )
