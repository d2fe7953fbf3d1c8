"""The validation kit: typed bodies report the problem a reader checking fields in order would find
first, with the field's documented message, whatever order the client wrote the fields in."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from msgspec import UNSET, Meta, UnsetType

from flowbox.errors import InvalidRequest
from flowbox.validation import NOT_BLANK, Problems, given, is_number, is_text, typed


class Body(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(max_length=5, pattern=NOT_BLANK)]
    size: Annotated[int, Meta(ge=1)] | UnsetType = UNSET
    colour: str | UnsetType = UNSET
    note: Any = UNSET


MESSAGES = {"name": "bad name", "size": "bad size", "colour": "bad colour"}


def problem(body: Any, **options: Any) -> str | None:
    try:
        typed(body, Body, MESSAGES, **options)
    except InvalidRequest as exc:
        assert exc.title == "Validation failed"
        return exc.message
    return None


def test_is_text():
    assert is_text("") and is_text(" ", 1) and not is_text(" ", required=True)
    assert is_text("abc", 3) and not is_text("abcd", 3)
    assert not is_text("a\ud800b") and not is_text(5) and not is_text(None)


def test_is_number():
    # JSON's true and false decode to bools, which Python counts as ints: not numbers here
    assert not is_number(True) and not is_number(False) and not is_number("1") and not is_number(None)
    assert is_number(0) and is_number(-2.5) and not is_number(float("nan")) and not is_number(float("inf"))
    assert is_number(3, 1, 3, integer=True) and not is_number(3.0, integer=True) and not is_number(4, 1, 3)
    assert is_number(10**400) and not is_number(10**400, high=1e308)  # an int too long for a float is still compared


def test_the_first_problem_in_field_order():
    assert problem([]) == "The request body must be a JSON object."
    assert problem({"zz": 1, "aa": 1, "name": 5}) == 'Unknown field "aa".'
    assert problem({}) == "bad name"  # missing, required by the Struct
    assert problem({"size": 0, "name": "   "}) == "bad name"  # blank, though written after size
    assert problem({"size": 0, "name": "x"}) == "bad size"
    assert problem({"colour": 1, "size": True, "name": "x"}) == "bad size"  # a bool is no int
    assert problem({"colour": "a\ud800", "name": "toolong"}) == "bad name"
    assert problem({"colour": "a\ud800", "name": "x"}) == "bad colour"  # not text
    assert problem({"name": "x", "size": 2, "colour": "red", "note": [1, "\ud800"]}) is None  # Any: not checked


def test_require_and_checks():
    assert problem({"name": "x"}, require=("colour",)) == "bad colour"
    assert problem({"name": "x", "colour": "red"}, checks={"colour": lambda c: c in ("blue",)}) == "bad colour"
    assert problem({"name": "x", "size": 0, "colour": "red"}, checks={"colour": lambda c: False}) == "bad size"

    def refuse(value: Any) -> None:
        raise InvalidRequest("Validation failed", f"note {value} refused")

    assert problem({"name": "x", "note": 3, "colour": 1}, checks={"note": refuse}) == "bad colour"
    assert problem({"name": "x", "note": 3}, checks={"note": refuse}) == "note 3 refused"


def test_given_and_messages_of_another_surface():
    body = typed({"name": " x ", "size": 2}, Body, MESSAGES)
    assert given(body) == {"name": " x ", "size": 2}
    with pytest.raises(KeyError, match="nope"):
        typed({"nope": 1}, Body, MESSAGES, lambda message: KeyError(message), unknown="{field}")


def test_problems_lists_every_one_with_its_path():
    problems = Problems()
    problems.add("steps[0].title", "is required")
    problems.add("steps[2]", "must be an object")
    assert problems.under("steps[2]") and not problems.under("steps[1]")
    message, errors = problems.summary("flows[1].")
    assert message == "flows[1].steps[0].title: is required (and 1 more)"
    assert errors == [{"path": "flows[1].steps[0].title", "message": "is required"},
                      {"path": "flows[1].steps[2]", "message": "must be an object"}]
