"""WhatsApp template sends (agents-api.txt, ``POST /api/public/agent/:agent_id/waba``) through a
per-org (or per-agent) WhatsApp Cloud API connection."""
