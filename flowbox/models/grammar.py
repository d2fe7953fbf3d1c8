"""JSON schemas made into llama.cpp grammars (GBNF), safely: the one place a grammar is made.

llama.cpp parses a grammar in native code that aborts the process on text it does not expect
(a NUL ends its C string mid-literal), and user text reaches schemas: enum values drawn from a
message (the tool router's candidates, the knowledge query), caller tool schemas and
``response_format``. So:
- a schema is checked before it is converted: bounded in size and depth, strings free of NUL and
  lone surrogates, references local only (the converter would fetch a URL ``$ref``);
- the grammar text has every other control character written as an escape the parser reads
  (``\\xHH``), so nothing but printable text and the rule separators reach the parser;
- text taken from a user for a schema goes through ``schema_text`` first (controls become spaces).
The worker process (``models/worker.py``) is the backstop for whatever gets through.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any

MAX_SCHEMA_BYTES = 64 * 1024
MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # in the grammar text: all but the rule separator \n
_USER_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_ESCAPES = {"x": 2, "u": 4, "U": 8}
# The converter writes strings JSON-escaped, so a character beyond U+FFFF becomes a surrogate pair
# of \u escapes, which llama.cpp's parser would read as two (unwritable) characters.
_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})")


def _join_pair(match: re.Match) -> str:
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    return f"{match.group(1)}\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"


def _unmatchable(grammar: str) -> str | None:
    """The first character a literal or positive character class of the grammar requires that no
    token can produce (NUL, a lone surrogate), else None. llama.cpp aborts when a grammar leaves
    no token possible; its own grammars use NUL only in negated classes (``[^...\\x00-\\x1F]``)."""
    i, n = 0, len(grammar)
    while i < n:
        ch = grammar[i]
        if ch not in "\"[":
            i += 1
            continue
        close, negated = ('"', False) if ch == '"' else ("]", grammar[i + 1:i + 2] == "^")
        i += 1
        while i < n and grammar[i] != close:
            code = ord(grammar[i])
            if grammar[i] == "\\" and i + 1 < n:
                width = _ESCAPES.get(grammar[i + 1], 0)
                digits = grammar[i + 2:i + 2 + width]
                code = int(digits, 16) if width and len(digits) == width and all(c in string.hexdigits for c in digits) else 1
                i += 2 + width
            else:
                i += 1
            if not negated and (code == 0 or 0xD800 <= code <= 0xDFFF):
                return f"U+{code:04X}"
        i += 1
    return None


class InvalidSchema(ValueError):
    """The schema cannot be made into a grammar; the message says why (for a 400)."""


def schema_text(text: str) -> str:
    """User text to put in a schema (an enum value): control characters and lone surrogates become spaces."""
    return _USER_CONTROL.sub(" ", text)


def check_schema(schema: Any) -> None:
    def walk(node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidSchema("nested too deeply")
        if isinstance(node, dict):
            for key, value in node.items():
                walk(key, depth + 1)
                if key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
                    raise InvalidSchema(f"reference {value!r} is not local (only '#/...' references are allowed)")
                walk(value, depth + 1)
        elif isinstance(node, list):
            for item in node:
                walk(item, depth + 1)
        elif isinstance(node, str):
            if "\x00" in node:
                raise InvalidSchema("a string holds a NUL character")
            if any("\ud800" <= ch <= "\udfff" for ch in node):
                raise InvalidSchema("a string holds a lone surrogate")

    if not isinstance(schema, dict):
        raise InvalidSchema("a schema must be an object")
    walk(schema, 0)
    try:
        size = len(json.dumps(schema, allow_nan=False))
    except ValueError as exc:
        raise InvalidSchema(str(exc)) from None
    if size > MAX_SCHEMA_BYTES:
        raise InvalidSchema(f"larger than {MAX_SCHEMA_BYTES} bytes")


def schema_grammar(schema: dict[str, Any]) -> str:
    """The GBNF grammar of a JSON schema; raises ``InvalidSchema``."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    check_schema(schema)
    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter asserts or raises; its message names the bad part
        raise InvalidSchema(str(exc) or type(exc).__name__) from None
    grammar = _PAIR.sub(_join_pair, grammar)
    if (char := _unmatchable(grammar)) is not None:
        raise InvalidSchema(f"it requires the character {char}, which no model can write")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", grammar)
