"""WhatsApp connections and the log of template sends."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("flowbox.whatsapp")


@migrations()
def m001_whatsapp(db):
    db.executescript(
        """
        CREATE TABLE whatsapp_connections (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            agent_id TEXT NOT NULL DEFAULT '',  -- '': the org's connection, for agents without their own
            phone_number_id TEXT NOT NULL,
            access_token TEXT NOT NULL,
            api_base_url TEXT,                  -- NULL: the whatsapp_api_base_url setting
            api_version TEXT,                   -- NULL: the whatsapp_api_version setting
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (org_id, agent_id)
        );
        CREATE TABLE whatsapp_sends (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            connection_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            customer_name TEXT,
            template_name TEXT NOT NULL,
            language TEXT NOT NULL,
            status TEXT NOT NULL,               -- sent, failed
            message_id TEXT,                    -- the Cloud API's wamid
            http_status INTEGER,
            error TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX whatsapp_sends_agent ON whatsapp_sends(agent_id, created_at);
        """
    )
