"""pipeline.values: converting stated values to field types, or saying why not."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import FIELD_TYPES, FieldDefinition, FieldType, FieldValue
from pipeline.values import convert
from tests.fixtures.strategies import json_values


def field(type_: str) -> FieldDefinition:
    return FieldDefinition(name="x", type=type_)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("str", "  slow sand filter ", "slow sand filter"),
        ("str", "   ", None),
        ("str", 12, "12"),
        ("str", 1.5, "1.5"),
        ("str", True, "true"),
        ("str", False, "false"),
        ("int", 12, 12),
        ("int", 12.0, 12),
        ("int", -3, -3),
        ("int", "12", 12),
        ("int", "+12", 12),
        ("int", "−12", -12),
        ("int", "1,200", 1200),
        ("int", "1 200", 1200),
        ("int", "1\u2009200", 1200),
        ("int", "1,234,567", 1234567),
        ("int", "12.0", 12),
        ("int", "12 %", 12),
        ("int", "12%", 12),
        ("int", "12 bar", 12),
        ("int", "12 plants", 12),
        ("int", "5 mg/L", 5),
        ("int", "1.5e3", 1500),
        ("float", 12, 12.0),
        ("float", "12.5 %", 12.5),
        ("float", "1,234.5", 1234.5),
        ("float", "1.5e3", 1500.0),
        ("float", "2.5E-3", 0.0025),
        ("float", "12,5", 12.5),
        ("float", "12,25", 12.25),
        ("float", "12,500", 12500.0),
        ("float", "-0.75", -0.75),
        ("float", "20 °C", 20.0),
        ("bool", True, True),
        ("bool", False, False),
        ("bool", 1, True),
        ("bool", 0, False),
        ("bool", "Yes", True),
        ("bool", "no", False),
        ("bool", "TRUE", True),
        ("bool", "false", False),
        ("bool", "y", True),
        ("bool", "N", False),
        ("bool", "1", True),
        ("bool", "0", False),
        ("date", "2021-05-03", "2021-05-03"),
        ("date", " 2021-05-03 ", "2021-05-03"),
        ("date", "2021-05-03T10:00:00Z", "2021-05-03"),
        ("list", ["a", " b ", None, "", 3], ["a", "b", "3"]),
        ("list[str]", ["reverse osmosis", True], ["reverse osmosis", "true"]),
        ("list[str]", "Pythium, Phytophthora", ["Pythium, Phytophthora"]),
        ("list[str]", [None, " "], None),
        ("list[int]", [1, "2", "1,200", 4.0], [1, 2, 1200, 4]),
        ("list[int]", "12", [12]),
        ("list[int]", 7, [7]),
        ("list[float]", ["1.5", 2, "12,5 %"], [1.5, 2.0, 12.5]),
        ("list[float]", 0.5, [0.5]),
        ("dict", {"a": 1, "b": [2]}, {"a": 1, "b": [2]}),
        ("dict", [{"key": "pH", "value": 7}, {"key": "EC", "value": "1.2"}], {"pH": 7, "EC": "1.2"}),
    ],
)
def test_converts_unambiguous_values(type_: str, value: FieldValue, expected: FieldValue) -> None:
    converted = convert(field(type_), value)
    assert converted.problem is None
    assert converted.value == expected
    assert type(converted.value) is type(expected)


@pytest.mark.parametrize("type_", ["str", "int", "float", "bool", "date", "list", "list[int]", "dict"])
def test_none_stays_none_without_a_problem(type_: str) -> None:
    assert convert(field(type_), None) == (None, None)


@pytest.mark.parametrize(
    ("type_", "value", "problem"),
    [
        ("str", ["a"], "expected a single value, got a list"),
        ("str", {"a": 1}, "expected a single value, got a dict"),
        ("int", "12.5", "'12.5' is not an integer"),
        ("int", 12.5, "12.5 is not an integer"),
        ("int", True, "could not read True as an integer"),
        ("int", "10-20", "could not read '10-20' as an integer"),
        ("int", "10–20", "could not read '10–20' as an integer"),
        ("int", "10 to 20", "could not read '10 to 20' as an integer"),
        ("int", "about 12", "could not read 'about 12' as an integer"),
        ("int", "<5", "could not read '<5' as an integer"),
        ("int", "12 and 14", "could not read '12 and 14' as an integer"),
        ("int", "12 of 40", "could not read '12 of 40' as an integer"),
        ("int", "many", "could not read 'many' as an integer"),
        ("float", "10-20 mg", "could not read '10-20 mg' as a float"),
        ("float", "1,2345", "could not read '1,2345' as a float"),
        ("float", "1,234,5", "could not read '1,234,5' as a float"),
        ("float", "1.234,5", "could not read '1.234,5' as a float"),
        ("float", "12 very long unit words", "could not read '12 very long unit words' as a float"),
        ("float", float("nan"), "could not read nan as a float"),
        ("float", [1.5], "could not read [1.5] as a float"),
        ("bool", "maybe", "could not read 'maybe' as true or false"),
        ("bool", 2, "could not read 2 as true or false"),
        ("date", "2021-05", "could not read '2021-05' as a date (YYYY-MM-DD)"),
        ("date", "2021", "could not read '2021' as a date (YYYY-MM-DD)"),
        ("date", "May 2021", "could not read 'May 2021' as a date (YYYY-MM-DD)"),
        ("date", "2021-02-30", "could not read '2021-02-30' as a date (YYYY-MM-DD)"),
        ("date", 2021, "could not read 2021 as a date (YYYY-MM-DD)"),
        ("list[str]", ["a", ["b"]], "expected a list of single values, got a list in it"),
        ("list[str]", {"a": 1}, "expected a list, got a dict"),
        ("list[int]", [1, "2.5"], "list item: '2.5' is not an integer"),
        ("list[float]", [1, "n/a"], "list item: could not read 'n/a' as a float"),
        ("list[int]", "10-20", "list item: could not read '10-20' as an integer"),
        ("dict", "a=1", "expected a dict, got 'a=1'"),
        ("dict", [{"name": "pH", "value": 7}], 'expected a dict or a list of {"key": …, "value": …} objects'),
        ("dict", [{"key": "a", "value": 1}, {"key": "a", "value": 2}], "duplicate key 'a'"),
    ],
)
def test_ambiguous_values_become_none_with_a_problem(type_: str, value: FieldValue, problem: str) -> None:
    assert convert(field(type_), value) == (None, problem)


# -- any value ------------------------------------------------------------------------------------------------

stated_values = st.one_of(
    json_values,
    st.from_regex(r"-?\d{1,3}(\.\d+)?[eE][-+]?\d{1,12}", fullmatch=True),  # "1e999999999" must not hang
    st.integers(min_value=-(10**400), max_value=10**400),
)


@settings(max_examples=300, deadline=1000, derandomize=True)
@given(value=stated_values, kind=st.sampled_from(FIELD_TYPES))
def test_conversion_never_raises_and_integers_fit_64_bits(value: Any, kind: FieldType) -> None:
    converted = convert(FieldDefinition(name="a", type=kind), value)
    assert (converted.value is None) or (converted.problem is None)
    items = converted.value if isinstance(converted.value, list) and kind != "dict" else [converted.value]
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            assert -(2**63) <= item < 2**63
    msgspec.json.encode(converted.value)
