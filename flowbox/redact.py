"""Keeping secrets out of what flowbox shows: API answers, CLI output, error messages and logs.

Keys and project tokens are stored hashed and never shown after creation (orgs.py, messaging/projects.py);
the secrets flowbox must keep in plain text to use them (WhatsApp access tokens, webhook verify tokens,
remote-model keys) are shown masked, and scrubbed from text that came from elsewhere."""

from __future__ import annotations

REDACTED = "[redacted]"


def mask(secret: str | None) -> str | None:
    """``****`` and the last four characters (enough to tell two secrets apart), none of a short one."""
    if secret is None:
        return None
    return "****" + (secret[-4:] if len(secret) > 8 else "")


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every occurrence of each secret replaced (upstream servers may echo a credential)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
