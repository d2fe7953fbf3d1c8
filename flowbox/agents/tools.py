"""Tools agents can call: the built-ins, and providers that add tools per agent (knowledge)."""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..models import ToolSpec


@dataclass(frozen=True)
class ToolContext:
    store: Any
    org_id: str
    agent_id: str
    services: Any = None  # the app's Services, for tools that need models or search


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    run: Callable[[dict[str, Any], ToolContext], Awaitable[Any]]

    @property
    def name(self) -> str:
        return self.spec.name


# -- calculator ----------------------------------------------------------------------------

_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}
_EXPRESSION = re.compile(r"[-(]*\d+(?:\.\d+)?\)*(?:\s*(?:\*\*|[-+*/x×÷%^])\s*[-(]*\d+(?:\.\d+)?\)*)+")


def evaluate(expression: str) -> float | int:
    """Arithmetic only: numbers, + - * / // % ** and parentheses. Never eval()."""
    expression = expression.replace("×", "*").replace("÷", "/").replace("^", "**")
    expression = re.sub(r"(?<=\d)\s*x\s*(?=\d)", "*", expression)
    tree = ast.parse(expression, mode="eval")

    def walk(node: ast.AST) -> float | int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError("only arithmetic is supported")

    value = walk(tree)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("result is not a finite number")
        if value.is_integer():
            return int(value)
        return round(value, 10)
    return value


def expressions_in(text: str) -> list[str]:
    """Arithmetic expressions written in a message (for the router's argument enum)."""
    found = []
    for match in _EXPRESSION.finditer(text):
        candidate = match.group(0).strip()
        try:
            evaluate(candidate)
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError):
            continue
        if candidate not in found:
            found.append(candidate)
    return found


async def _calculator(args: dict[str, Any], ctx: ToolContext) -> Any:
    expression = str(args.get("expression", ""))
    try:
        return {"expression": expression, "result": evaluate(expression)}
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError) as exc:
        return {"expression": expression, "error": str(exc) or type(exc).__name__}


CALCULATOR = Tool(
    ToolSpec(
        name="calculator",
        description="Evaluates an arithmetic expression exactly, e.g. 37 * 41.",
        parameters={
            "type": "object",
            "properties": {"expression": {"type": "string", "pattern": r"^[0-9+\-*/(). x%^]{1,80}$"}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        examples=(("What is 12 * 7?", {"expression": "12 * 7"}), ("how much is 150 + 275 - 20", {"expression": "150 + 275 - 20"})),
        candidates=lambda text: {"expression": expressions_in(text)},
        applies=lambda text: bool(expressions_in(text)),
    ),
    _calculator,
)


# -- date and time -------------------------------------------------------------------------

_TIME_WORDS = re.compile(
    r"\b(date|day|days|time|today|tonight|tomorrow|yesterday|week|weekday|month|year|clock|hour|now|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.IGNORECASE,
)

async def _datetime(args: dict[str, Any], ctx: ToolContext) -> Any:
    moment = dt.datetime.now(dt.timezone.utc)
    return {
        "utc": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "date": moment.strftime("%Y-%m-%d"),
        "time": moment.strftime("%H:%M"),
        "weekday": moment.strftime("%A"),
    }


DATETIME = Tool(
    ToolSpec(
        name="datetime",
        description="Gives the current date, time (UTC) and day of the week.",
        parameters={"type": "object", "properties": {}, "additionalProperties": False},
        examples=(("What day is it today?", {}), ("what time is it now", {})),
        applies=lambda text: bool(_TIME_WORDS.search(text)),
    ),
    _datetime,
)

BUILTIN_TOOLS: dict[str, Tool] = {t.name: t for t in (CALCULATOR, DATETIME)}

# Functions (ctx, agent) -> list[Tool] adding tools an agent gets without naming them
# (the knowledge base adds its search tool to agents that have linked knowledge). Areas declare
# theirs (``Area.tool_providers``).
ToolProvider = Callable[[ToolContext, dict], Awaitable[list[Tool]]]

# Functions (ctx, agent, user text) -> [(tool name, arguments, result)]: tool calls made for the
# agent before the model runs (the knowledge base retrieves context this way), recorded in the
# thread like the model's own calls so the history shows what an answer was based on.
ContextProvider = Callable[[ToolContext, dict, str], Awaitable[list[tuple[str, dict, Any]]]]


def _areas(ctx: ToolContext) -> tuple:
    return ctx.services.areas if ctx.services is not None else ()


async def tools_for_agent(ctx: ToolContext, agent: dict) -> list[Tool]:
    tools = [BUILTIN_TOOLS[name] for name in agent["tools"] if name in BUILTIN_TOOLS]
    for area in _areas(ctx):
        for provider in area.tool_providers:
            tools.extend(await provider(ctx, agent))
    return tools


def context_providers(ctx: ToolContext) -> list[ContextProvider]:
    return [provider for area in _areas(ctx) for provider in area.context_providers]
