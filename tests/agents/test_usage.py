"""Credits and the usage endpoint: the document's date rules and error bodies word for word, totals
and daily breakdowns from the per-call ledger, the 402 when a balance runs out, the CLI."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from flowbox import usage
from flowbox.agents import usage_api
from flowbox.cli.main import cli
from flowbox.errors import Problem
from flowbox.ids import new_id, now
from tests.helpers import create_agent

TODAY = dt.date(2025, 6, 20)
D = dt.date.fromisoformat

RANGE_ERROR = ("Invalid date range", "start_date is required when end_date is provided (format: YYYY-MM-DD)")
FORMAT_ERROR = ("Invalid date format", "Dates must be in YYYY-MM-DD format")
INVALID_DATES = ("Invalid dates", "Provided dates are not valid")
ORDER_ERROR = ("Invalid date range", "start_date must not be after end_date")
END_ERROR = ("Invalid end date", "end_date cannot be today or in the future. Data is only available up to yesterday.")
TOO_LARGE = ("Date range too large", "Date range cannot exceed 31 days")

DATE_RULES = [
    # (start_date, end_date) -> (start, end) or the documented error
    ((None, None), (D("2025-06-13"), D("2025-06-19"))),           # default: 7 days ending yesterday
    (("", ""), (D("2025-06-13"), D("2025-06-19"))),               # empty parameters count as absent
    (("2025-06-01", None), (D("2025-06-01"), D("2025-06-19"))),   # only start: end is yesterday
    (("2025-06-19", None), (D("2025-06-19"), D("2025-06-19"))),
    (("2025-05-20", "2025-05-26"), (D("2025-05-20"), D("2025-05-26"))),
    (("2025-05-01", "2025-05-31"), (D("2025-05-01"), D("2025-05-31"))),  # 31 days: the most allowed
    (("2024-02-29", "2024-02-29"), (D("2024-02-29"), D("2024-02-29"))),  # a leap day
    ((None, "2025-06-10"), RANGE_ERROR),
    (("", "2025-06-10"), RANGE_ERROR),
    ((None, "garbage"), RANGE_ERROR),                              # missing start wins over format
    (("2025/06/01", None), FORMAT_ERROR),
    (("2025-6-1", None), FORMAT_ERROR),
    (("2025-06-01", "20250610"), FORMAT_ERROR),
    (("2025-06-01T00:00:00Z", None), FORMAT_ERROR),
    (("٢٠٢٥-٠٦-٠١", None), FORMAT_ERROR),                          # non-ASCII digits
    (("2025-02-30", None), INVALID_DATES),
    (("2025-06-01", "2025-13-01"), INVALID_DATES),
    (("2023-02-29", "2023-03-01"), INVALID_DATES),
    (("0000-01-01", "2025-01-01"), INVALID_DATES),
    (("2025-06-10", "2025-06-09"), ORDER_ERROR),
    (("2025-06-20", None), ORDER_ERROR),                            # start today, end (yesterday) before it
    (("2025-06-10", "2025-06-20"), END_ERROR),                      # end today
    (("2025-06-10", "2025-07-01"), END_ERROR),                      # end in the future
    (("2025-04-30", "2025-05-31"), TOO_LARGE),                      # 32 days
    (("2025-01-01", None), TOO_LARGE),
]


@pytest.mark.parametrize("given,expected", DATE_RULES)
def test_date_rules(given, expected):
    if isinstance(expected[0], str):
        with pytest.raises(Problem) as info:
            usage_api.date_range(*given, TODAY)
        assert info.value.status == 400
        assert (info.value.title, info.value.message) == expected
    else:
        assert usage_api.date_range(*given, TODAY) == expected


def test_credit_rule_is_configurable():
    assert usage.credits_for(0, 0) == 1
    assert usage.credits_for(999, 1) == 1 and usage.credits_for(1000, 1) == 2
    rule = type("Cfg", (), {"tokens_per_credit": 10, "min_credits_per_call": 2})()
    assert usage.credits_for(5, 5, rule) == 2 and usage.credits_for(15, 10, rule) == 3
    flat = type("Cfg", (), {"tokens_per_credit": 0, "min_credits_per_call": 3})()
    assert usage.credits_for(10_000, 10_000, flat) == 3


def add_runs(server, agent_id: str, rows: list[tuple[str, float]], org_id: str | None = None) -> None:
    """Ledger rows (created_at, credits) for an agent."""

    async def go():
        async with server.services.store.write() as tx:
            await tx.executemany(
                "INSERT INTO runs (id, org_id, agent_id, status, credits, created_at) VALUES (?, ?, ?, 'completed', ?, ?)",
                [(new_id(), org_id or server.org_id, agent_id, credits, at) for at, credits in rows],
            )

    server.call(go())


SERVER_OPTIONS = {"tokens_per_credit": 10}  # the charging test's rule; the ledger tests write their own rows


@pytest.fixture
def server(org_server):
    """One server for the module; each test works in an org of its own."""
    return org_server


def test_usage_report_from_the_ledger(server):
    client = server.client()
    agent = create_agent(client)
    other = create_agent(client, name="other")
    add_runs(server, agent["id"], [
        ("2025-05-26T23:59:59.999Z", 5),   # before tracking started: not counted
        ("2025-05-28T00:00:00.000Z", 1),
        ("2025-05-28T13:00:00.000Z", 2),
        ("2025-05-30T23:59:59.999Z", 4),
        ("2025-05-31T00:00:00.000Z", 0),   # only positive charges count
        ("2025-06-01T00:00:00.000Z", 7),   # after the range
    ])
    add_runs(server, other["id"], [("2025-05-29T10:00:00.000Z", 9)])
    response = client.get(f"/api/public/agent/{agent['id']}/usage", params={"start_date": "2025-05-25", "end_date": "2025-05-31"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "agent_id": agent["id"],
        "time_range": {"start": "2025-05-25T00:00:00.000Z", "end": "2025-05-31T23:59:59.999Z"},
        "usage": {
            "total_credits_used": 7,
            "daily_breakdown": [
                {"date": "2025-05-31", "credits_used": 0},
                {"date": "2025-05-30", "credits_used": 4},
                {"date": "2025-05-29", "credits_used": 0},
                {"date": "2025-05-28", "credits_used": 3},
                {"date": "2025-05-27", "credits_used": 0},
                {"date": "2025-05-26", "credits_used": 0},
                {"date": "2025-05-25", "credits_used": 0},
            ],
        },
        "note": "Endpoint active from 28 May 2025 onwards",
    }
    # a range from 28 May on has no note
    body = client.get(f"/api/public/agent/{agent['id']}/usage", params={"start_date": "2025-05-28", "end_date": "2025-05-28"}).json()
    assert "note" not in body and body["usage"] == {"total_credits_used": 3, "daily_breakdown": [{"date": "2025-05-28", "credits_used": 3}]}


def test_default_range_is_the_last_7_days_ending_yesterday_utc(server):
    client = server.client()
    agent = create_agent(client)
    today = now().date()
    yesterday = today - dt.timedelta(days=1)
    add_runs(server, agent["id"], [
        (f"{yesterday}T23:30:00.000Z", 2),
        (f"{today - dt.timedelta(days=7)}T12:00:00.000Z", 3),
        (f"{today - dt.timedelta(days=8)}T12:00:00.000Z", 100),  # outside
        (f"{today}T00:00:01.000Z", 100),                          # today: outside
    ])
    body = client.get(f"/api/public/agent/{agent['id']}/usage").json()
    assert body["time_range"] == {"start": f"{today - dt.timedelta(days=7)}T00:00:00.000Z", "end": f"{yesterday}T23:59:59.999Z"}
    days = body["usage"]["daily_breakdown"]
    assert [d["date"] for d in days] == [str(yesterday - dt.timedelta(days=i)) for i in range(7)]
    assert days[0]["credits_used"] == 2 and days[-1]["credits_used"] == 3
    assert body["usage"]["total_credits_used"] == 5 and "note" not in body
    only_start = client.get(f"/api/public/agent/{agent['id']}/usage", params={"start_date": str(yesterday)}).json()
    assert only_start["usage"]["daily_breakdown"] == [{"date": str(yesterday), "credits_used": 2}]


def test_usage_errors_word_for_word(server):
    client = server.client()
    agent = create_agent(client)
    url = f"/api/public/agent/{agent['id']}/usage"
    today = now().date()
    cases = [
        ({"end_date": "2025-06-01"}, RANGE_ERROR),
        ({"start_date": "June 1"}, FORMAT_ERROR),
        ({"start_date": "2025-02-30"}, INVALID_DATES),
        ({"start_date": "2025-06-02", "end_date": "2025-06-01"}, ORDER_ERROR),
        ({"start_date": str(today - dt.timedelta(days=3)), "end_date": str(today)}, END_ERROR),
        ({"start_date": "2025-06-01", "end_date": "2025-07-02"}, TOO_LARGE),
    ]
    for params, (error, message) in cases:
        response = client.get(url, params=params)
        assert response.status_code == 400 and response.json() == {"error": error, "message": message}, params
    assert server.client(key="").get(url).json() == {"error": "API key is required",
                                                     "message": "Please provide an API key in the Authorization header"}
    response = server.client(key="fbx_wrong").get(url)
    assert response.status_code == 401 and response.json() == {"error": "Invalid API key", "message": "The provided API key is not valid"}
    for agent_path in ("/api/public/agent//usage", "/api/public/agent/%20/usage"):
        response = client.get(agent_path)
        assert response.status_code == 400 and response.json() == {"error": "agent_id is required and must be a non-empty string"}
    assert server.client(key="").get("/api/public/agent//usage").status_code == 401
    _, other_key = server.new_org()
    denied = {"error": "Access denied", "message": "This agent does not belong to your organisation"}
    response = server.client(key=other_key).get(url)
    assert response.status_code == 403 and response.json() == denied
    response = client.get("/api/public/agent/no-such-agent/usage")
    assert response.status_code == 403 and response.json() == denied


def test_credits_are_charged_and_run_out_with_402(server):
    client = server.client()
    agent = create_agent(client, max_tokens=4)
    server.call(usage.set_credits(server.services.store, server.org_id, 6))
    first = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi"})
    assert first.status_code == 200, first.text
    metadata = first.json()["body"]["metadata"]
    run = server.call(server.services.store.fetchone("SELECT * FROM runs WHERE id = ?", [metadata["id"]]))
    assert metadata["used_credits"] == run["credits"] == -(-(run["prompt_tokens"] + run["completion_tokens"]) // 10) > 1
    balance = server.call(usage.balance(server.services.store, server.org_id))
    assert balance["credits"] == max(6 - metadata["used_credits"], 0) and balance["used_credits"] == metadata["used_credits"]
    server.call(usage.set_credits(server.services.store, server.org_id, 0))
    no_credits = {"statusCode": 402, "body": {"agent_id": agent["id"], "message": "No credits available", "error": "No credits available"}}
    for body in ({"messages": "Hi"}, {"messages": "Hi", "callback_url": "https://example.com/cb"}):
        response = client.post(f"/api/public/agent/{agent['id']}/chat", json=body)
        assert response.status_code == 402 and response.json() == no_credits
    assert server.call(server.services.store.fetchone("SELECT COUNT(*) AS n FROM runs WHERE org_id = ?", [server.org_id]))["n"] == 1
    server.call(usage.set_credits(server.services.store, server.org_id, None))
    assert client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi"}).status_code == 200


def test_credits_cli():
    runner = CliRunner()
    shown = json.loads(runner.invoke(cli, ["credits", "show", "--json"]).output)
    assert shown["unlimited"] is True and shown["credits"] is None and shown["used_credits"] == 0
    result = runner.invoke(cli, ["credits", "set", "250", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["credits"] == 250
    assert json.loads(runner.invoke(cli, ["credits", "set", "-50", "--add", "--json"]).output)["credits"] == 200
    assert "200" in runner.invoke(cli, ["credits", "show"]).output
    assert json.loads(runner.invoke(cli, ["credits", "set", "unlimited", "--json"]).output)["unlimited"] is True
    bad = runner.invoke(cli, ["credits", "set", "lots"])
    assert bad.exit_code == 1 and "AMOUNT must be a number" in bad.output
    assert runner.invoke(cli, ["credits", "set", "-1"]).exit_code != 0
    assert runner.invoke(cli, ["credits", "show", "--org", "nope"]).exit_code == 1
