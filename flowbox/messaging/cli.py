"""``flowbox projects`` and ``flowbox flows``: the same functions the Management API calls."""

from __future__ import annotations

import json

import click

from ..cli.common import config_options, fail, json_option, org_option, output, output_secret, with_store
from ..cli.keys import _org_id
from . import flows as flows_mod
from . import projects as projects_mod
from . import unmatched as unmatched_mod
from .common import iso_param
from .media import forget_project

COLUMNS = ["projectId", "name", "clientId", "tokenPrefix", "webhookUrl", "agentId"]
FLOW_COLUMNS = ["flowId", "title", "group", "disabled", "steps"]


def setting_options(fn):
    for option in reversed([
        click.option("--webhook-url", default=None, help="Where replies and events are POSTed ('' to clear)."),
        click.option("--verify-token", default=None, help="Sent as verifyToken with every webhook call, and signs it."),
        click.option("--agent", "agent_id", default=None, help="Agent id answering UNKNOWN messages ('' to clear)."),
        click.option("--business-hours", "hours_file", type=click.File("r"), default=None,
                     help="JSON file with the businessHours list."),
        click.option("--outside-hours-event", default=None, help="Event fired for messages outside business hours ('' to clear)."),
        click.option("--threshold", type=float, default=None, help="Intent match threshold, 0-1 (default: server setting)."),
    ]):
        fn = option(fn)
    return fn


def _settings(webhook_url, verify_token, agent_id, hours_file, outside_hours_event, threshold) -> dict:
    settings = {"webhookUrl": webhook_url, "webhookVerifyToken": verify_token, "agentId": agent_id,
                "outsideHoursEvent": outside_hours_event, "intentThreshold": threshold}
    settings = {k: v for k, v in settings.items() if v is not None}
    if hours_file is not None:
        try:
            settings["businessHours"] = json.load(hours_file)
        except json.JSONDecodeError as exc:
            fail(f"{hours_file.name} is not valid JSON: {exc}")
    return settings


async def _project(store, project_id: str) -> dict:
    project = await projects_mod.get_project(store, project_id)
    if project is None:
        raise LookupError(f"no project with id {project_id}")
    return project


@click.group()
def projects() -> None:
    """Messaging projects: flows, threads, webhook and business hours."""


@projects.command("create")
@click.argument("name")
@org_option
@setting_options
@json_option
@config_options
def projects_create(name, org_id, webhook_url, verify_token, agent_id, hours_file, outside_hours_event, threshold, as_json, cfg):
    """Create a project. Its API token is printed once."""
    settings = _settings(webhook_url, verify_token, agent_id, hours_file, outside_hours_event, threshold)

    async def go(store):
        project, token = await projects_mod.create_project(store, await _org_id(store, org_id), name, settings,
                                                           allow_private=cfg.allow_private_outbound)
        return {**projects_mod.public(project), "token": token}

    output_secret(with_store(cfg, go), as_json, "API token", "token", "projectId", "clientId", "name")


@projects.command("list")
@click.option("--org", "org_id", default=None, help="Only this org's projects.")
@json_option
@config_options
def projects_list(org_id, as_json, cfg):
    """List projects."""

    async def go(store):
        return [projects_mod.public(p) for p in await projects_mod.list_projects(store, org_id)]

    output(with_store(cfg, go), as_json, COLUMNS)


@projects.command("show")
@click.argument("project_id")
@json_option
@config_options
def projects_show(project_id, as_json, cfg):
    """A project and its settings."""

    async def go(store):
        return projects_mod.public(await _project(store, project_id))

    output(with_store(cfg, go), as_json, COLUMNS)


@projects.command("update")
@click.argument("project_id")
@click.option("--name", default=None)
@setting_options
@json_option
@config_options
def projects_update(project_id, name, webhook_url, verify_token, agent_id, hours_file, outside_hours_event, threshold, as_json, cfg):
    """Change a project's name or settings."""
    settings = _settings(webhook_url, verify_token, agent_id, hours_file, outside_hours_event, threshold)
    if name is not None:
        settings["name"] = name

    async def go(store):
        await _project(store, project_id)
        return projects_mod.public(await projects_mod.update_project(store, project_id, settings, allow_private=cfg.allow_private_outbound))

    output(with_store(cfg, go), as_json, COLUMNS)


@projects.command("token")
@click.argument("project_id")
@json_option
@config_options
def projects_token(project_id, as_json, cfg):
    """Replace a project's API token (the old one stops working). Printed once."""

    async def go(store):
        await _project(store, project_id)
        return {"projectId": project_id, "token": await projects_mod.rotate_token(store, project_id)}

    output_secret(with_store(cfg, go), as_json, "API token", "token")


@projects.command("delete")
@click.argument("project_id")
@json_option
@config_options
def projects_delete(project_id, as_json, cfg):
    """Delete a project with its flows, threads and history."""
    deleted = with_store(cfg, lambda store: projects_mod.delete_project(store, project_id))
    if not deleted:
        fail(f"no project with id {project_id}")
    forget_project(cfg.data_path, project_id)
    output({"projectId": project_id, "deleted": True}, as_json)


def _misread_command(name: str, listing, what: str, columns: list[str], help: str):  # noqa: A002 - click's word
    """``flowbox projects unmatched`` and ``unsure``: ``listing`` (unmatched.py) of one project, from the database."""

    @projects.command(name, help=help)
    @click.argument("project_id")
    @click.option("--since", default=None, help=f"ISO 8601 date or time to count from (default: the last {unmatched_mod.DAYS} days).")
    @click.option("--limit", type=click.IntRange(1, unmatched_mod.MAX_LIMIT), default=20, show_default=True, help="Texts listed at most.")
    @json_option
    @config_options
    def command(project_id, since, limit, as_json, cfg):
        async def go(store):
            start = unmatched_mod.default_since() if since is None else iso_param(since, "--since")
            return await listing(store, await _project(store, project_id), start, limit)

        report = with_store(cfg, go)
        if as_json:
            output(report, True)
            return
        click.echo(f"{report['messages']} {what} since {report['since']}, {report['distinct']} distinct texts")
        output([{**t, "matched": t["matched"]["stepId"]} if "matched" in t else t for t in report["texts"]], False, columns)

    return command


projects_unmatched = _misread_command(
    "unmatched", unmatched_mod.unmatched, "unmatched messages", ["count", "threads", "lastAt", "unknownStepId", "text"],
    "What customers wrote that no intent matched, the most frequent first. The Management API's /unmatched adds "
    "what the flows make of each text now (it needs the server's models).")
projects_unsure = _misread_command(
    "unsure", unmatched_mod.unsure, "unsure matches", ["count", "threads", "lastAt", "confidence", "matched", "text"],
    f"What intents matched with a confidence below {unmatched_mod.UNSURE}, the most frequent first: where the flows "
    "most likely misunderstood. The Management API's /unsure adds what the flows make of each text now.")


@click.group()
def flows() -> None:
    """Author a project's flows: import, export, list, delete."""


def project_option(fn):
    return click.option("--project", "project_id", required=True, help="Project id.")(fn)


@flows.command("import")
@click.argument("file", type=click.File("r"))
@project_option
@click.option("--replace", is_flag=True, help="Delete the project's flows that the file does not hold.")
@json_option
@config_options
def flows_import(file, project_id, replace, as_json, cfg):
    """Import FILE: one Flow, a list of Flows, or an export ({"flows": [...]}). All or nothing."""
    try:
        document = json.load(file)
    except json.JSONDecodeError as exc:
        fail(f"{file.name} is not valid JSON: {exc}")

    async def go(store):
        await _project(store, project_id)
        return await flows_mod.import_flows(store, project_id, document, replace)

    result = with_store(cfg, go)
    if as_json:
        output(result, True)
    else:
        click.echo(f"created {len(result['created'])}, updated {len(result['updated'])}, deleted {len(result['deleted'])} flows")


@flows.command("export")
@project_option
@click.option("-o", "--output", "out", type=click.File("w"), default="-", help="File to write (default: stdout).")
@config_options
def flows_export(project_id, out, cfg):
    """Write every flow of a project as JSON (what ``flows import`` reads)."""

    async def go(store):
        await _project(store, project_id)
        return await flows_mod.export_flows(store, project_id)

    out.write(json.dumps(with_store(cfg, go), indent=2) + "\n")


@flows.command("list")
@project_option
@json_option
@config_options
def flows_list(project_id, as_json, cfg):
    """List a project's flows."""

    async def go(store):
        await _project(store, project_id)
        return await flows_mod.list_flows(store, project_id)

    rows = with_store(cfg, go)
    output(rows if as_json else [{**f, "steps": len(f["steps"])} for f in rows], as_json, FLOW_COLUMNS)


@flows.command("delete")
@click.argument("flow_id")
@project_option
@json_option
@config_options
def flows_delete(flow_id, project_id, as_json, cfg):
    """Delete a flow."""
    if not with_store(cfg, lambda store: flows_mod.delete_flow(store, project_id, flow_id)):
        fail(f"no flow {flow_id} in project {project_id}")
    output({"flowId": flow_id, "deleted": True}, as_json)
