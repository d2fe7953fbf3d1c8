"""Splitting documents into knowledge entries on sensible boundaries.

Tries the coarsest boundary first (markdown headings, then paragraphs, lines, sentences,
clauses, words) and cuts mid-word only when a single word is longer than an entry; the pieces
are then packed greedily into entries of at most ``size`` characters.
"""

from __future__ import annotations

import re

# Zero-width splits keep every character: the pieces join back into the text exactly.
BOUNDARIES = (
    re.compile(r"(?=\n#{1,6} )"),  # markdown headings
    re.compile(r"(?<=\n\n)"),  # paragraphs
    re.compile(r"(?<=\n)"),  # lines
    re.compile(r"(?<=[.!?。])(?=\s)"),  # sentences
    re.compile(r"(?<=[;:,])(?=\s)"),  # clauses
    re.compile(r"(?=\s)"),  # words
)
HEADING = re.compile(r"^#{1,6} +(.+)$", re.MULTILINE)


def _pieces(text: str, size: int, level: int = 0) -> list[str]:
    if len(text) <= size:
        return [text]
    if level == len(BOUNDARIES):
        return [text[i:i + size] for i in range(0, len(text), size)]
    parts = [p for p in BOUNDARIES[level].split(text) if p]
    if len(parts) == 1:
        return _pieces(text, size, level + 1)
    out: list[str] = []
    for part in parts:
        out.extend(_pieces(part, size, level + 1))
    return out


def split_text(text: str, size: int = 1500) -> list[str]:
    """Entries of at most ``size`` characters, whitespace-trimmed, none empty."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text, size):
        # a new section starts a new entry unless the current one is still small
        section = piece.startswith("\n#") and len(current) > size // 4
        if current and (section or len(current) + len(piece) > size):
            chunks.append(current)
            current = ""
        current += piece
    chunks.append(current)
    return [c.strip() for c in chunks if c.strip()]


def first_heading(text: str) -> str | None:
    match = HEADING.search(text)
    return match.group(1).strip() if match else None
