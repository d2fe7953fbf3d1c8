"""The judge's bar and floor (``flowbox/messaging/acceptance.py``) and the off-topic rule's margin
(``flowbox/messaging/off_topic.py``) measured through the engine, on dev halves only; with ``--set``, any
other of ``flowbox.messaging``'s bars too (``--set matcher.PHRASING_BAR=0.6,0.65 --set acceptance.SURE=0.7``).

Each (bar, floor, margin, and what ``--set`` names) is set in the running process and every dev utterance is sent as ``intents.py`` sends it
(``Bot.ask``: a real project, ``conversation.handle``, a fresh thread), then all / in scope / out of scope is
printed, and the share of messages answered wrongly (another intent's answer, or an answer to what the flows do not
cover: where a message turned away is asked to rephrase, these mislead). The tuned flows' dev half by default;
``--unseen`` the 48 unseen flows' (``intents.py --unseen``).
Never the untuned flows, and never a test half: those report what was chosen here. The flows are prepared once,
before the sweep, so a constant read while a flow is prepared (``off_topic.COVERED``, which phrasings a flow keeps)
does not move here: measure that one a process per value.

    python scripts/eval/acceptance_sweep.py [--bars 0.25,0.3] [--floors 0.4] [--margins 0.15,0.2] [--set module.NAME=v1,v2] [--unseen]
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from inprocess import InProcessServer  # noqa: E402  (beside this script)
from intents import DOMAINS, MODELS, Bot, accuracy, load_cases, unseen  # noqa: E402


def values(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def setting(text: str) -> tuple[str, str, list[float]]:
    """``module.NAME=v1,v2`` (a module of flowbox.messaging): the module, the name and the values."""
    name, _, given = text.partition("=")
    module, _, constant = name.rpartition(".")
    if not module or not given:
        raise argparse.ArgumentTypeError(f"expected module.NAME=v1,v2, not {text!r}")
    return module, constant, values(given)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=values, default=[0.25, 0.3, 0.35, 0.4])
    parser.add_argument("--floors", type=values, default=[0.4])
    parser.add_argument("--margins", type=values, default=[0.15], help="the off-topic rule's (off_topic.MARGIN)")
    parser.add_argument("--set", type=setting, action="append", default=[], dest="settings",
                        help="module.NAME=v1,v2: another bar of flowbox.messaging to sweep (repeatable)")
    parser.add_argument("--unseen", action="store_true", help="the unseen flows' dev half instead of the tuned flows'")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    server = InProcessServer("sweep", MODELS, call_timeout=300)
    from flowbox import orgs
    from flowbox.messaging import acceptance, off_topic

    modules = {m: importlib.import_module(f"flowbox.messaging.{m}") for m, _, _ in args.settings}
    for module, constant, _ in args.settings:
        if not hasattr(modules[module], constant):
            parser.error(f"flowbox.messaging.{module} has no {constant}")

    org, _ = server.call(orgs.ensure_default_org(server.services.store, with_key=False))
    sources = unseen() if args.unseen else {d: (None, load_cases(d)) for d in DOMAINS}
    cases = [c for _, domain_cases in sources.values() for c in domain_cases if c.split == "dev"]
    bots = {d: Bot(server, d, org["id"], None, flow) for d, (flow, _) in sources.items()}
    for bot in bots.values():
        bot.wait_ready()
    print(f"{'unseen' if args.unseen else 'tuned'} flows, dev half: {len(cases)} utterances (all / in scope / out of scope; "
          "then the share answered wrongly: another intent's answer, or an answer to what the flows do not cover)")
    for bar, floor, margin, *others in itertools.product(args.bars, args.floors, args.margins, *(v for _, _, v in args.settings)):
        acceptance.BAR, acceptance.FLOOR, off_topic.MARGIN = bar, floor, margin
        chosen = [(module, constant, value) for (module, constant, _), value in zip(args.settings, others)]
        for module, constant, value in chosen:
            setattr(modules[module], constant, value)
        named = "".join(f", {module}.{constant} {value:.2f}" for module, constant, value in chosen)
        predicted = [bots[c.domain].ask(c) for c in cases]
        measured = accuracy(cases, predicted)
        wrong = sum(p != "UNKNOWN" and p not in c.expected for c, p in zip(cases, predicted)) / len(cases)
        print(f"  bar {bar:.2f}, floor {floor:.2f}, off-topic margin {margin:.2f}{named}: "
              f"{measured['overall']:.3f} / {measured['in']:.3f} / {measured['oos']:.3f}; wrongly {wrong:.3f}", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
