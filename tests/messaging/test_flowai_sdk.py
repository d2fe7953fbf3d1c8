"""The published flowai-js SDK (v1.9.5), unchanged, driving a real flowbox server under node.

The SDK is not ours to commit (it is not on the npm registry and has no license file), so the
test unpacks its ``npm pack`` tarball from outside the repository: ``FLOWAI_JS_TGZ``, else
``../shared/vendor/flowai-js-1.9.5.tgz`` beside the repository's root. Its runtime dependencies
come from the npm registry once and are cached (``FLOWBOX_TEST_SDK_DIR``, default
``~/.cache/flowbox-test-sdk``), keyed by the tarball's hash. Without the tarball the test is
skipped, saying so; with it, anything that keeps it from running (no node, a failed install)
fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from flowbox.messaging import projects

HERE = Path(__file__).parent
FLOW = json.loads((HERE / "messaging_flow.json").read_text())
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
SDK_TGZ = Path(os.environ.get("FLOWAI_JS_TGZ") or HERE.resolve().parents[2] / "shared" / "vendor" / "flowai-js-1.9.5.tgz")
SDK_CACHE = Path(os.environ.get("FLOWBOX_TEST_SDK_DIR") or Path.home() / ".cache" / "flowbox-test-sdk")


def install_sdk(tgz: Path, cache: Path) -> Path:
    """The SDK's ``lib/`` with its npm dependencies installed beside it; built once per tarball
    (in a scratch dir, then renamed into place, so a half-done or concurrent install is never used)."""
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()[:16]
    home = cache / f"flowai-js-{digest}"
    if (home / "installed").is_file():
        return home / "package" / "lib"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to run the flowai-js SDK test ({tgz} is present); install nodejs and npm")
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="flowai-js-", dir=cache))
    try:
        with tarfile.open(tgz) as archive:
            archive.extractall(scratch, filter="data")
        package = scratch / "package"
        sdk = json.loads((package / "package.json").read_text())
        # Only its runtime dependencies: its build tooling (babel 7, webpack 4) is not needed to run lib/.
        (package / "package.json").write_text(json.dumps({"name": "flowai-js-under-test", "private": True,
                                                          "dependencies": sdk["dependencies"]}))
        npm = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], cwd=package,
                             capture_output=True, text=True, timeout=600)
        if npm.returncode != 0:
            pytest.fail(f"npm could not install the flowai-js SDK's dependencies: {npm.stderr.strip()[-2000:]}")
        (scratch / "installed").write_text(sdk["version"])
        try:
            scratch.rename(home)
        except OSError:  # another run finished first: use its install
            if not (home / "installed").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return home / "package" / "lib"


@pytest.fixture(scope="session")
def flowai_sdk() -> Path:
    if not SDK_TGZ.is_file():
        pytest.skip(f"the flowai-js SDK tarball is absent ({SDK_TGZ}); set FLOWAI_JS_TGZ to its npm pack file to run this test")
    return install_sdk(SDK_TGZ, SDK_CACHE)


def test_real_flowai_js_sdk(flowai_sdk, make_server, tmp_path):
    server = make_server(preload_model=False)
    project, token = server.call(projects.create_project(server.services.store, server.org_id, "shop", {}))
    assert server.client(f"Bearer {token}").post(f"/v1/projects/{project['id']}/flows", json=FLOW).status_code == 201
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    run = subprocess.run(["node", str(HERE / "flowai_sdk_driver.js")], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "SDK": str(flowai_sdk), "BASE": server.base_url, "CLIENT_ID": project["client_id"],
                              "TOKEN": token, "IMAGE": str(image)})
    steps = {s["step"]: s for s in map(json.loads, filter(None, run.stdout.splitlines()))}
    assert run.returncode == 0 and "done" in steps, run.stdout + run.stderr
    thread = steps["connected"]["threadId"]
    assert thread.endswith("|" + base64.b64decode(project["client_id"]).decode().split("|")[1]) and steps["connected"]["secret"]
    # A human agent paused the thread before its user said anything; resumed, the bot answers the first message.
    assert steps["paused"] == {"step": "paused", "pause": 200, "status": {"status": "ok", "isPaued": True, "isPaused": True,
                                                                          "threadId": thread}, "history": [], "resume": 200}
    assert steps["hello"]["texts"] == ["Hi! Ask me about the weather, or give feedback."] and steps["hello"]["threadId"] == thread
    assert steps["hello"]["delivered"] == {"traceId": 1, "speech": "Hello", "threadId": thread}
    assert steps["event"]["texts"] == ["Welcome to the shop!"] and steps["event"]["speech"] == "event attachment"
    assert steps["noticed"]["unnoticed"] is False and steps["unnoticed"]["unnoticed"] is True
    assert steps["moderator"] == {"step": "moderator", "status": 200, "texts": ["Anna here, how can I help?"], "name": "Anna"}
    roles = [role for role, _ in steps["history"]["entries"]]
    assert steps["history"]["threadId"] == thread and roles == ["user", "bot", "user", "bot", "moderator"]
    upload = steps["upload"]
    assert upload["mediaType"] == "image" and upload["mimetype"] == "image/png" and upload["texts"] == ["Nice picture!"]
    assert server.client("").get(upload["url"]).content == PNG
    assert steps["merger"]["error"]
    assert steps["weather"]["texts"] == ["Let me check the weather.", "Which city?"]
    assert steps["reconnected"] == {"step": "reconnected", "threadId": thread, "texts": ["The weather in Amsterdam is sunny."]}
    assert steps["done"]["errors"] == []  # no frame the SDK failed to understand
