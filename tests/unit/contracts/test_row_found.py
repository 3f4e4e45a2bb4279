"""contracts/progress.py: a ``row_found`` event's values, flat on the wire and back exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts import Event, EventValue, FieldValue, decode_event, encode_event
from contracts.progress import RowFound, read_data

VALUES: dict[str, FieldValue] = {
    "technology_name": "Reverse osmosis",
    "removal_percent": 97.5,
    "units": 3,
    "certified": False,
    "cost": None,
    "crops": ["strawberry", "lettuce"],
    "limits": {"ph": [6, 8], "source": "well"},
    "note": '["not a list", just text]',  # text that looks like JSON stays text
}


def _through_an_event(data: dict[str, EventValue]) -> dict[str, EventValue]:
    """``data`` as a client receives it: inside an event, encoded and decoded."""
    event = Event(
        task_id="t", client_id="c", seq=1, status="processing", stage="extraction", message="m", progress=40,
        timestamp=1.0, data=data,
    )  # fmt: skip
    return dict(decode_event(encode_event(event)).data)


def test_values_travel_as_one_flat_key_per_field_and_come_back_exactly():
    found = RowFound(candidate="W123#1", document="W123", title="Membranes for irrigation water", values=VALUES)
    data = _through_an_event(found.as_data())

    assert data["kind"] == "row_found" and data["candidate"] == "W123#1" and data["document"] == "W123"
    assert [key for key in data if key.startswith("value_")] == [f"value_{name}" for name in VALUES]  # schema order
    assert data["value_removal_percent"] == 97.5 and data["value_cost"] is None
    assert data["value_crops"] == '["strawberry","lettuce"]'  # lists and dicts as JSON text
    assert data["json_fields"] == "crops,limits"
    assert data["value_note"] == VALUES["note"]
    assert RowFound.values_from(data) == VALUES
    assert read_data(data) == found  # read_data gives the values back too


def test_a_row_without_values_has_no_value_keys():
    data = RowFound(candidate="d#0", document="d", title="t").as_data()
    assert data == {"kind": "row_found", "candidate": "d#0", "document": "d", "title": "t"}
    assert read_data(data) == RowFound(candidate="d#0", document="d", title="t")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), _JSON, max_size=6))
def test_any_row_of_json_values_comes_back_as_it_was_sent(values: dict[str, FieldValue]) -> None:
    found = RowFound(candidate="d#0", document="d", title="t", values=values)
    assert RowFound.values_from(_through_an_event(found.as_data())) == values
