"""Answer-quality evaluation: each local model's answers to the same questions, scored
automatically, side by side, through the Agents API of a real flowbox server.

Data (``scripts/eval/data/``): ``answers_questions.tsv`` (category, check, question) and
``answers_kb.txt`` (knowledge entries, each starting with a ``=== id | name`` line, made up so that
no model knows them). Categories:
  * fact: general knowledge, with the accepted answer variants;
  * instruction: following an instruction on the form of the answer (format, length, case, language);
  * arithmetic: too hard to do in the head of a small model; the agent has the calculator tool;
  * knowledge: answered only by the knowledge entries the script adds, linked to the agent.
Checks (several joined with `` & `` must all hold):
  ``any:a|b`` a variant appears (any case, whole words); ``num:X`` the number X appears (thousands
  separators ignored); ``only:x`` the answer is x, punctuation and case aside; ``case:X`` X appears
  as written; ``start:x`` / ``end:x`` the answer starts or ends with x; ``words<=N``; ``lines=N``
  (non-empty); ``lower`` (no capitals); ``json:key=value`` (the answer is a JSON object holding it);
  ``re:PATTERN`` (searched in the whole answer).
Each question lands in a dev or a test half by a hash of its text (as the other evaluations): change
prompts and checks looking at dev, report test.

Measured per model, in one run: accuracy per category and overall (test half, dev beside it), the
share of arithmetic questions where the calculator was called, and speed: completion tokens per
second of answering (the run's tokens from the usage ledger over the requests' wall time, prompt
reading included) and seconds per answer. Each question is its own new thread, temperature 0.

    python scripts/eval/answers.py [--model NAME=PATH[:CHAT_FORMAT] ...] [--registered DATA_DIR] [--only local,NAME] [--misses]

``local`` is the built-in default (``chat_model``); ``--model`` adds a GGUF file for the run (as
``flowbox models add`` does; ``:CHAT_FORMAT`` for a file without a chat template, e.g. ``:gemma``);
``--registered`` adds every model registered in that flowbox data dir (its files, as they are).
Runs offline: the default models are prepared into ~/.cache/flowbox-test-models (as the tests do).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from inprocess import InProcessServer  # beside this script

DATA = Path(__file__).parent / "data"
CATEGORIES = ("fact", "instruction", "arithmetic", "knowledge")
INSTRUCTIONS = "You are a helpful assistant. Answer briefly and exactly."
MAX_TOKENS = 96


@dataclass
class Case:
    category: str
    check: str
    question: str

    @property
    def split(self) -> str:
        """Deterministic: the same question always lands in the same half."""
        return "dev" if hashlib.sha1(self.question.encode()).digest()[0] % 2 == 0 else "test"


def load_cases() -> list[Case]:
    cases = []
    for line in (DATA / "answers_questions.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            category, check, question = line.split("\t")
            assert category in CATEGORIES, category
            cases.append(Case(category, check, question))
    return cases


def load_entries() -> list[tuple[str, str]]:
    """(name, content) of each knowledge entry."""
    entries = []
    for block in (DATA / "answers_kb.txt").read_text().split("=== ")[1:]:
        head, _, content = block.partition("\n")
        entries.append((head.split("|", 1)[1].strip(), content.strip()))
    return entries


# -- scoring ------------------------------------------------------------------------------------

def _numbers(text: str) -> list[float]:
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return [float(n) for n in re.findall(r"(?<![\d.])-?\d+(?:\.\d+)?", text)]


def _has(text: str, variant: str) -> bool:
    left = r"\b" if variant[:1].isalnum() else ""
    right = r"\b" if variant[-1:].isalnum() else ""
    return re.search(left + re.escape(variant) + right, text, re.IGNORECASE) is not None


def _bare(text: str) -> str:
    return re.sub(r"[^\w\s-]", "", text).strip().lower()


def _json_holds(text: str, spec: str) -> bool:
    key, _, value = spec.partition("=")
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and str(data.get(key)) == value


def passes(answer: str, check: str) -> bool:
    """Whether ``answer`` meets every part of ``check`` (the module's docstring lists them)."""
    answer = answer.strip()
    for part in check.split(" & "):
        kind, _, arg = part.partition(":")
        if kind == "any":
            ok = any(_has(answer, v) for v in arg.split("|"))
        elif kind == "num":
            ok = float(arg) in _numbers(answer)
        elif kind == "only":
            ok = _bare(answer) == arg
        elif kind == "case":
            ok = arg in answer
        elif kind == "start":
            ok = _bare(answer).startswith(arg)
        elif kind == "end":
            ok = _bare(answer).endswith(arg)
        elif kind.startswith("words<="):
            ok = len(answer.split()) <= int(kind[len("words<="):])
        elif kind.startswith("lines="):
            ok = len([line for line in answer.splitlines() if line.strip()]) == int(kind[len("lines="):])
        elif kind == "lower":
            ok = answer == answer.lower()
        elif kind == "json":
            ok = _json_holds(answer, arg)
        elif kind == "re":
            ok = re.search(arg, answer) is not None
        else:
            raise ValueError(f"unknown check {part!r}")
        if not ok:
            return False
    return True


# -- the server ---------------------------------------------------------------------------------

class Server(InProcessServer):
    """The evaluation's server, with an HTTP client holding an API key of the default org."""

    def __init__(self) -> None:
        from flowbox import orgs

        super().__init__("answers", ("smollm2", "all-minilm-l6-v2"))

        async def first_key():
            org, _ = await orgs.ensure_default_org(self.services.store, with_key=False)
            key, _ = await orgs.create_key(self.services.store, org["id"], "eval")
            return key

        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": self.call(first_key())}, timeout=600)

    def add_model(self, name: str, path: str, chat_format: str = "", **settings) -> None:
        """Registers a GGUF file as ``flowbox models add`` does (the server reads the registry live)."""
        from flowbox.db import sqlite3
        from flowbox.models.registry import add_model

        conn = sqlite3.connect(str(self.config.db_path), isolation_level=None)
        try:
            add_model(conn, name, path, models_dir=self.config.models_path, taken=self.services.models.names(), chat_format=chat_format,
                      **settings)
        finally:
            conn.close()

    def run_tokens(self, run_id: str) -> int:
        row = self.call(self.services.store.fetchone("SELECT completion_tokens FROM runs WHERE id = ?", [run_id]))
        return int(row["completion_tokens"]) if row else 0

    def stop(self) -> None:
        self.client.close()
        super().stop()


def registered_in(data_dir: str) -> list:
    """The models registered in another flowbox data dir."""
    from flowbox.db import sqlite3
    from flowbox.models.registry import all_registered

    conn = sqlite3.connect(f"file:{Path(data_dir).expanduser() / 'flowbox.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return list(all_registered(conn).values())
    finally:
        conn.close()


# -- one model ----------------------------------------------------------------------------------

@dataclass
class Answer:
    case: Case
    text: str
    correct: bool
    seconds: float
    tokens: int
    called_calculator: bool


def agents_for(server: Server, model: str, entries: list[tuple[str, str]]) -> dict[str, str]:
    """An agent per category on ``model``: plain for facts and instructions, with the calculator for
    arithmetic, linked to the knowledge entries for knowledge."""
    def create(name: str, **fields) -> str:
        body = {"name": f"{model} {name}", "model": model, "instructions": INSTRUCTIONS, "temperature": 0,
                "max_tokens": MAX_TOKENS, **fields}
        response = server.client.post("/api/public/agent", json=body)
        response.raise_for_status()
        return response.json()["id"]

    plain = create("plain")
    agents = {"fact": plain, "instruction": plain, "arithmetic": create("calculator", tools=["calculator"]),
              "knowledge": create("knowledge", instructions=INSTRUCTIONS + " Use the knowledge given to you.")}
    for name, content in entries:
        response = server.client.post("/api/public/knowledge", json={"name": name, "content": content, "agent_ids": [agents["knowledge"]]})
        response.raise_for_status()
    return agents


def ask(server: Server, agent_id: str, case: Case) -> Answer:
    started = time.perf_counter()
    response = server.client.post(f"/api/public/agent/{agent_id}/chat", json={"messages": case.question})
    seconds = time.perf_counter() - started
    response.raise_for_status()
    body = response.json()["body"]
    text = body["conversation_history"][-1]["content"]
    text = text if isinstance(text, str) else "".join(p.get("text", "") for p in text if p.get("type") == "text")
    calls = body["metadata"]["tool_calls"].values()
    return Answer(case, text, passes(text, case.check), seconds, server.run_tokens(body["metadata"]["id"]),
                  any(c["toolName"] == "calculator" for c in calls))


def evaluate(server: Server, model: str, cases: list[Case], entries: list[tuple[str, str]]) -> list[Answer]:
    agents = agents_for(server, model, entries)
    ask(server, agents["fact"], Case("fact", "any:x", "Hello"))  # loads the model: not timed with the answers
    return [ask(server, agents[case.category], case) for case in cases]


# -- the report ---------------------------------------------------------------------------------

def _share(answers: list[Answer]) -> str:
    return f"{sum(a.correct for a in answers) / len(answers):5.0%} ({sum(a.correct for a in answers)}/{len(answers)})" if answers else "-"


def report(results: dict[str, list[Answer]]) -> None:
    models = list(results)
    width = max(24, *(len(m) + 2 for m in models))
    print("\nAccuracy on the test half (dev half in brackets)\n")
    print(f"{'':<22}" + "".join(f"{m:>{width}}" for m in models))
    for category in (*CATEGORIES, "overall"):
        row = f"{category:<22}"
        for model in models:
            picked = [a for a in results[model] if category in ("overall", a.case.category)]
            test, dev = [a for a in picked if a.case.split == "test"], [a for a in picked if a.case.split == "dev"]
            row += f"{_share(test) + ' [' + _share(dev).split()[0] + ']':>{width}}"
        print(row)
    print()
    for label, value in (
        ("calculator called", lambda a: f"{sum(x.called_calculator for x in a if x.case.category == 'arithmetic')}"
                                        f"/{sum(x.case.category == 'arithmetic' for x in a)}"),
        ("tokens/s (answers)", lambda a: f"{sum(x.tokens for x in a) / sum(x.seconds for x in a):.1f}"),
        ("seconds per answer", lambda a: f"{sum(x.seconds for x in a) / len(a):.2f}"),
    ):
        print(f"{label:<22}" + "".join(f"{value(results[m]):>{width}}" for m in models))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH[:CHAT_FORMAT]", help="a GGUF file to evaluate too")
    parser.add_argument("--registered", metavar="DATA_DIR", help="also every model registered in this flowbox data dir")
    parser.add_argument("--only", default="", help="comma-separated model names to run (default: all)")
    parser.add_argument("--misses", action="store_true", help="print every wrong answer")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cases, entries = load_cases(), load_entries()
    server = Server()
    try:
        for spec in args.model:
            name, _, rest = spec.partition("=")
            path, _, chat_format = rest.partition(":") if not re.match(r"^[A-Za-z]:\\", rest) else (rest, "", "")
            server.add_model(name, path, chat_format)
        for model in registered_in(args.registered) if args.registered else []:
            server.add_model(model.name, model.path, model.chat_format, n_ctx=model.n_ctx, threads=model.threads, gpu_layers=model.gpu_layers)
        names = [n for n in server.services.models.names() if server.services.models.is_local(n)]
        if args.only:
            names = [n for n in names if n in args.only.split(",")]
        print(f"{len(cases)} questions ({sum(c.split == 'test' for c in cases)} test, {sum(c.split == 'dev' for c in cases)} dev); "
              f"models: {', '.join(names)}")
        results = {}
        for name in names:
            started = time.perf_counter()
            results[name] = evaluate(server, name, cases, entries)
            print(f"  {name}: {time.perf_counter() - started:.0f} s")
            if args.misses:
                for answer in results[name]:
                    if not answer.correct:
                        print(f"    [{answer.case.split} {answer.case.category}] {answer.case.question!r} ({answer.case.check}) -> {answer.text!r}")
        report(results)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
