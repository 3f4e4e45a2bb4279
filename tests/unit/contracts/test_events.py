"""contracts.events: an Event encodes with the field order of the design and decodes back."""

from contracts import Event, decode_event, encode_event


def test_event_round_trip_keeps_field_order_of_the_design():
    event = Event(
        task_id="t", client_id="c", seq=7, status="processing", stage="search", message="Found 42 papers",
        progress=35, timestamp=1764331200.12, data={"documents": 42},
    )  # fmt: skip
    raw = encode_event(event)
    assert raw.startswith(b'{"task_id":"t","client_id":"c","seq":7,"status":"processing","stage":"search"')
    assert decode_event(raw) == event
