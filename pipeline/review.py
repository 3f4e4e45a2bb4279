"""Review: checking one decision against a dataset, and the dataset as its audit trail leaves it.

The trail is the truth: a dataset's reviewed state is its extraction with every entry of the trail applied
in order, so nothing the extraction said is ever lost (``review.cells[field].original`` and ``?original=true``
give it back) and the same trail applies to a reprocessed dataset, row by row id. Entries whose row or field
the dataset no longer has are kept in the trail and change nothing. An approval holds only while the cell still
has the value that was approved (a reprocess may have changed it); an edit or a rejection always holds.
"""

from __future__ import annotations

import time

import msgspec

from contracts import (
    CELL_ACTIONS,
    CellReview,
    CellStatus,
    Dataset,
    DatasetRow,
    FieldValue,
    ReviewChange,
    ReviewEntry,
    RowReview,
)
from pipeline.errors import InvalidRequest, RowNotFound
from pipeline.schema import PYTHON_TYPES, schema_field

#: longest reviewer name and reason kept in the trail
MAX_REVIEWER = 200
MAX_REASON = 2000


def with_row_ids(dataset: Dataset) -> Dataset:
    """The dataset with every row addressable: rows stored before row ids existed get ``row-1``, ``row-2``…"""
    if all(row.row_id for row in dataset.rows):
        return dataset
    rows = [
        row if row.row_id else msgspec.structs.replace(row, row_id=f"row-{i}") for i, row in enumerate(dataset.rows, 1)
    ]
    return msgspec.structs.replace(dataset, rows=rows)


def entry(dataset: Dataset, row_id: str, change: ReviewChange, *, reviewer: str) -> ReviewEntry:
    """The trail entry for ``change`` to row ``row_id`` of the (reviewed) ``dataset``; refuses what cannot apply.

    ``InvalidRequest`` names the field to blame; an unknown row is ``RowNotFound``.
    """
    row = next((r for r in dataset.rows if r.row_id == row_id), None)
    if row is None:
        raise RowNotFound(dataset.task_id, row_id)
    if len(change.reason) > MAX_REASON:
        raise InvalidRequest("reason", f"at most {MAX_REASON} characters")
    if change.reviewer is not None and not 0 < len(change.reviewer.strip()) <= MAX_REVIEWER:
        raise InvalidRequest("reviewer", f"give a name of 1-{MAX_REVIEWER} characters, or leave it out")
    who = change.reviewer.strip() if change.reviewer is not None else reviewer
    if change.field is not None and change.action in CELL_ACTIONS:  # the field as the schema spells it
        named = schema_field((f.name for f in dataset.schema), change.field)
        change = msgspec.structs.replace(change, field=named or change.field)
    old, new = _row_change(row, change) if change.action not in CELL_ACTIONS else _cell_change(dataset, row, change)
    return ReviewEntry(
        row_id=row_id,
        field=change.field,
        action=change.action,
        old=old,
        new=new,
        reason=change.reason,
        reviewer=who,
        at=time.time(),
    )


def _row_change(row: DatasetRow, change: ReviewChange) -> tuple[FieldValue, FieldValue]:
    """A row's inclusion before and after an exclude or restore."""
    if change.field is not None or change.value is not None:
        name = "field" if change.field is not None else "value"
        raise InvalidRequest(name, f"{change.action!r} applies to the whole row: leave {name} out")
    excluded = row.review is not None and row.review.excluded
    return "excluded" if excluded else "included", "excluded" if change.action == "exclude" else "included"


def _cell_change(dataset: Dataset, row: DatasetRow, change: ReviewChange) -> tuple[FieldValue, FieldValue]:
    """A cell's value before and after an approval, a rejection (None) or an edit (converted to the field's type)."""
    types = {f.name: f.type for f in dataset.schema}
    if change.field is None:
        raise InvalidRequest("field", f"{change.action!r} reviews one cell: name its field ({', '.join(types)})")
    if change.field not in types:
        raise InvalidRequest("field", f"no field {change.field!r} in this dataset ({', '.join(types)})")
    old = row.row.get(change.field)
    if change.action == "edit":
        if change.value is None:
            raise InvalidRequest("value", "an edit needs the new value; to clear a wrong value, reject the cell")
        try:
            converted = msgspec.convert(change.value, PYTHON_TYPES[types[change.field]], strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidRequest("value", f"not a {types[change.field]}: {exc}") from exc
        return old, msgspec.to_builtins(converted)  # JSON-native, as cells are stored (dates as ISO text)
    if change.value is not None:
        raise InvalidRequest("value", f"{change.action!r} takes no value; use 'edit' to change the cell")
    return old, old if change.action == "approve" else None


def apply(dataset: Dataset, trail: list[ReviewEntry]) -> Dataset:
    """The dataset with ``trail`` applied: reviewed values in ``row``, each reviewed row's ``review`` state."""
    dataset = with_row_ids(dataset)
    if not trail:
        return dataset
    rows = {row.row_id: row for row in dataset.rows}
    values = {row_id: dict(row.row) for row_id, row in rows.items()}
    excluded: dict[str, bool] = {}
    cells: dict[str, dict[str, CellStatus]] = {}
    for item in trail:
        if item.row_id not in rows:
            continue
        if item.field is None:
            excluded[item.row_id] = item.action == "exclude"
            continue
        current = values[item.row_id]
        if item.field not in current or (item.action == "approve" and current[item.field] != item.new):
            continue
        current[item.field] = item.new
        original = rows[item.row_id].row.get(item.field)
        status: CellStatus = "rejected" if item.action == "reject" else "approved"
        if item.action == "edit" and item.new != original:
            status = "edited"
        elif item.action == "approve" and item.new != original:
            status = "edited"  # approving an edited value keeps it an edit
        cells.setdefault(item.row_id, {})[item.field] = status
    reviewed = [
        _reviewed(row, values[row.row_id], excluded.get(row.row_id, False), cells.get(row.row_id, {}))
        if row.row_id in excluded or row.row_id in cells
        else row
        for row in dataset.rows
    ]
    return msgspec.structs.replace(dataset, rows=reviewed, review=trail)


def _reviewed(
    row: DatasetRow, values: dict[str, FieldValue], excluded: bool, cells: dict[str, CellStatus]
) -> DatasetRow:
    review = RowReview(
        excluded=excluded,
        cells={name: CellReview(status=status, original=row.row.get(name)) for name, status in cells.items()},
    )
    return msgspec.structs.replace(row, row=values, review=review)


def included(dataset: Dataset) -> list[DatasetRow]:
    """The rows no reviewer excluded (what exports other than the full JSON hold)."""
    return [row for row in dataset.rows if row.review is None or not row.review.excluded]
