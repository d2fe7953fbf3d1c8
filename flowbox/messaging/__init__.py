"""Messaging API (``messaging-api.txt``): intent-flow projects, the dialog engine, REST v1,
webhooks, bot pause/resume, business hours and the Management API for flows.

Modules: ``projects`` (projects and their settings), ``flows`` (Flow documents: validation,
storage, import/export), ``hours`` (business hours), ``matcher`` (intent matching),
``engine`` (the dialog decision, a pure function of flows, thread state and one input),
``threads`` (thread state and history), ``conversation`` (one incoming message end to end:
the entry point REST and sockets share), ``webhooks``, ``hub`` (in-process per-thread
pub/sub), ``media`` (streamed uploads), ``api`` (routes), ``cli``.
"""
