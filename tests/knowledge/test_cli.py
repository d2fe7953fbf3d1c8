"""``flowbox knowledge``: bulk import (splitting, idempotent re-import, bad files), and the CRUD and
search commands with --json, on a real data dir with real embeddings. Plus the splitter itself."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from flowbox.cli.main import cli
from flowbox.knowledge.chunking import split_text


def run(*args, ok: bool = True):
    result = CliRunner().invoke(cli, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


def run_json(*args):
    return json.loads(run(*args, "--json").stdout)


@pytest.fixture
def agent_id(models_dir):  # the commands that take an agent embed with the real model
    return run_json("agents", "create", "docs agent")["id"]


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    (folder / "nested").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    sections = [f"## Topic {i}\n\n" + " ".join(f"Fact {i}.{j} about the gizmo fleet and its maintenance." for j in range(20)) for i in range(6)]
    (folder / "handbook.md").write_text("# Gizmo handbook\n\n" + "\n\n".join(sections), encoding="utf-8")
    (folder / "nested" / "hours.txt").write_text("The depot opens at 6am and closes at 10pm.", encoding="utf-8")
    (folder / "nested" / "page.html").write_text(
        "<html><head><style>p{}</style><script>var x;</script></head><body><h1>Parking</h1><p>Staff park on level &minus;2.</p></body></html>",
        encoding="utf-8")
    (folder / ".hidden" / "secret.txt").write_text("never imported", encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG not text")
    return folder


def test_import_splits_links_and_is_idempotent(docs, agent_id):
    first = run_json("knowledge", "import", str(docs), "--agent", agent_id, "--chunk-size", "1000")
    assert first["errors"] == [] and first["files"] == 3 and first["updated"] == 0
    listed = run_json("knowledge", "list", "--limit", "100")
    items = listed["knowledge_items"]
    assert first["created"] == len(items) == listed["pagination"]["total_count"] > 5
    assert all(i["source"] == "import" and i["linked_agents"] == [agent_id] for i in items)
    handbook = sorted((i for i in items if i["name"].startswith("handbook.md")), key=lambda i: i["name"])
    contents = [run_json("knowledge", "get", i["id"])["content"] for i in handbook]
    assert all(len(c) <= 1000 for c in contents)
    assert all(c.startswith(("# Gizmo", "## Topic")) or c[0].isupper() for c in contents)  # cut on boundaries
    assert "Fact 5.19 about the gizmo fleet and its maintenance." in "".join(contents)
    html = next(i for i in items if i["name"].startswith("page.html"))
    assert run_json("knowledge", "get", html["id"])["content"] == "# Parking\n\nStaff park on level \u22122."
    # the API lists only items created through the API (as documented)
    assert run_json("knowledge", "list", "--source", "api")["knowledge_items"] == []

    again = run_json("knowledge", "import", str(docs), "--agent", agent_id, "--chunk-size", "1000")
    assert (again["created"], again["updated"], again["deleted"], again["unchanged"]) == (0, 0, 0, first["created"])
    assert {i["id"] for i in run_json("knowledge", "list", "--limit", "100")["knowledge_items"]} == {i["id"] for i in items}

    # an edited file updates in place; a shorter one drops the parts it no longer has
    (docs / "nested" / "hours.txt").write_text("The depot opens at 5am and closes at midnight.", encoding="utf-8")
    (docs / "handbook.md").write_text("# Gizmo handbook\n\nNow a single short page.", encoding="utf-8")
    edited = run_json("knowledge", "import", str(docs), "--agent", agent_id, "--chunk-size", "1000")
    assert edited["updated"] == 2 and edited["deleted"] == len(handbook) - 1 and edited["created"] == 0
    hits = run_json("knowledge", "search", "when does the depot open", "--agent", agent_id)
    assert "5am" in hits[0]["content"]


def test_import_reports_bad_files_and_keeps_the_good_ones(tmp_path, agent_id):
    good = tmp_path / "good.md"
    good.write_text("Valid UTF-8 text about llamas.", encoding="utf-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    result = run("knowledge", "import", str(good), str(latin1), str(tmp_path / "missing.txt"), "--json", ok=False)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["created"] == 1 and len(report["errors"]) == 2
    assert "latin1.txt: not UTF-8 text" in report["errors"][0]
    assert "missing.txt: cannot read" in report["errors"][1]
    assert [i["name"] for i in run_json("knowledge", "list")["knowledge_items"]] == ["good.md"]
    # a foreign agent id is refused before anything is written
    result = run("knowledge", "import", str(good), "--agent", "no-such-agent", ok=False)
    assert result.exit_code == 1 and "One or more agents do not belong to your organisation" in result.output


def test_crud_and_search_commands(tmp_path, agent_id):
    item = run_json("knowledge", "add", "The rooftop garden grows basil and thyme.", "--agent", agent_id, "--name", "Garden")
    assert item["name"] == "Garden" and item["source"] == "cli" and item["linked_agents"] == [agent_id]
    too_long = run("knowledge", "add", "x" * 4001, "--agent", agent_id, ok=False)
    assert too_long.exit_code == 1 and "The content field must be 4000 characters or less." in too_long.output
    note = tmp_path / "note.txt"
    note.write_text("Visitors sign in at the lobby kiosk.", encoding="utf-8")
    second = run_json("knowledge", "add", "--file", str(note), "--agent", agent_id)
    updated = run_json("knowledge", "update", item["id"], "--content", "The rooftop garden grows tomatoes.")
    assert updated["id"] == item["id"]
    hits = run_json("knowledge", "search", "what vegetables grow on the roof", "--limit", "2")
    assert hits[0]["id"] == item["id"] and hits[0]["content"] == "The rooftop garden grows tomatoes."
    assert run_json("knowledge", "search", "kiosk", "--mode", "keyword")[0]["id"] == second["id"]
    assert run_json("knowledge", "delete", item["id"]) == {"id": item["id"], "deleted": True}
    missing = run("knowledge", "get", item["id"], ok=False)
    assert missing.exit_code == 1 and "Knowledge item not found or access denied" in missing.output
    table = run("knowledge", "list").stdout
    assert second["id"] in table and item["id"] not in table


def test_split_text_respects_limits_and_boundaries():
    text = "# Title\n\n" + "First sentence here. " * 90 + "\n\n## Second\n\nShort section.\n\n" + "w" * 5000
    chunks = split_text(text, 1500)
    assert all(0 < len(c) <= 1500 for c in chunks)
    assert chunks[0].startswith("# Title") and any(c.startswith("## Second") for c in chunks)
    assert all(c.endswith((".", "w")) for c in chunks)  # sentences are not cut in half
    assert "".join(c.replace(" ", "").replace("\n", "") for c in chunks) == text.replace(" ", "").replace("\n", "")
    assert split_text("  \n ", 100) == [] and split_text("short", 100) == ["short"]
    assert max(len(c) for c in split_text("z" * 9000, 4000)) == 4000
