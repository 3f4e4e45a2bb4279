"""The review trail applied to a dataset: what holds, what is ignored, what the original keeps."""

from __future__ import annotations

import msgspec
import pytest

from contracts import Dataset, DatasetRow, DatasetStats, FieldDefinition, ReviewChange, ReviewEntry
from pipeline import review
from pipeline.errors import InvalidRequest, RowNotFound

SCHEMA = [
    FieldDefinition(name="name", type="str", description="Name", required=True),
    FieldDefinition(name="year", type="int", description="Year", required=False),
    FieldDefinition(name="first_used", type="date", description="First use", required=False),
]


def make(*rows: tuple[str, dict[str, object]]) -> Dataset:
    return Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=SCHEMA,
        rows=[DatasetRow(row_id=row_id, row=values, citations=[]) for row_id, values in rows],  # type: ignore[arg-type]
        stats=DatasetStats(requested_rows=2, returned_rows=len(rows)),
    )


def entry(row_id: str, field: str | None, action: str, new: object = None) -> ReviewEntry:
    return msgspec.convert(
        {"row_id": row_id, "field": field, "action": action, "new": new, "reviewer": "r", "at": 1.0}, ReviewEntry
    )


def test_edits_rejections_and_exclusions_apply_in_order() -> None:
    data = make(("a", {"name": "A", "year": 2001}), ("b", {"name": "B", "year": None}))
    trail = [
        entry("a", "name", "edit", "A2"),
        entry("a", "year", "reject"),
        entry("b", None, "exclude"),
        entry("b", None, "restore"),
        entry("b", "year", "edit", 1999),
    ]
    a, b = review.apply(data, trail).rows
    assert a.row == {"name": "A2", "year": None}
    assert a.review is not None
    assert {k: (v.status, v.original) for k, v in a.review.cells.items()} == {
        "name": ("edited", "A"),
        "year": ("rejected", 2001),
    }
    assert b.review is not None and not b.review.excluded and b.row["year"] == 1999


def test_an_approval_holds_only_for_the_value_approved() -> None:
    data = make(("a", {"name": "A", "year": 2001}))
    assert review.apply(data, [entry("a", "year", "approve", 2001)]).rows[0].review is not None
    changed = review.apply(data, [entry("a", "year", "approve", 1990)]).rows[0]  # a reprocess changed the cell
    assert changed.review is None and changed.row["year"] == 2001


def test_entries_for_rows_or_fields_the_dataset_lacks_change_nothing() -> None:
    data = make(("a", {"name": "A", "year": 2001}))
    reviewed = review.apply(data, [entry("gone", "name", "edit", "X"), entry("a", "colour", "edit", "red")])
    assert reviewed.rows == data.rows and len(reviewed.review) == 2


def test_old_datasets_get_row_ids() -> None:
    data = make(("", {"name": "A"}), ("", {"name": "B"}))
    assert [r.row_id for r in review.apply(data, []).rows] == ["row-1", "row-2"]


def test_an_edit_is_converted_and_stored_as_json_native() -> None:
    data = make(("a", {"name": "A", "year": 2001, "first_used": None}))
    made = review.entry(data, "a", ReviewChange(action="edit", field="first_used", value="2020-02-03"), reviewer="r")
    assert made.new == "2020-02-03" and made.old is None
    made = review.entry(data, "a", ReviewChange(action="edit", field="year", value="1999"), reviewer="r")
    assert made.new == 1999
    with pytest.raises(InvalidRequest) as bad:
        review.entry(data, "a", ReviewChange(action="edit", field="first_used", value="last spring"), reviewer="r")
    assert bad.value.field == "value"
    with pytest.raises(RowNotFound):
        review.entry(data, "zz", ReviewChange(action="exclude"), reviewer="r")


def test_a_cell_named_in_another_case_or_unicode_form_is_the_schemas_field() -> None:
    data = make(("a", {"name": "A", "year": 2001, "first_used": None}))
    for spelling in ("Year", "ＹＥＡＲ", "year"):
        made = review.entry(data, "a", ReviewChange(action="edit", field=spelling, value="1999"), reviewer="r")
        assert (made.field, made.old, made.new) == ("year", 2001, 1999)  # the trail names the field as stored
    with pytest.raises(InvalidRequest, match="no field 'years'"):
        review.entry(data, "a", ReviewChange(action="edit", field="years", value="1999"), reviewer="r")
