"""Administration over HTTP and the web console.

- ``api.py``: the routes: ``/api/admin/org`` and ``/api/admin/options``
- ``keys.py``: ``/api/admin/keys``: list, create and revoke the caller's org's API keys
- ``console.py``: the console (``flowbox/static/``) at ``/``, and the API docs rendered at ``/schema``
"""
