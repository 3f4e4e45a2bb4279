"""Review: a researcher checks and corrects a dataset, cell by cell and row by row, with an audit trail."""

from __future__ import annotations

from typing import Literal

from contracts.base import FieldValue, Inbound, Record

#: approve, reject or edit one cell (``field`` set); exclude or restore a whole row (``field`` left out)
ReviewAction = Literal["approve", "reject", "edit", "exclude", "restore"]
CELL_ACTIONS: frozenset[str] = frozenset({"approve", "reject", "edit"})
ROW_ACTIONS: frozenset[str] = frozenset({"exclude", "restore"})

#: a reviewed cell: approved as extracted, rejected (its value is removed), or edited (a new value)
CellStatus = Literal["approved", "rejected", "edited"]


class ReviewChange(Inbound, frozen=True, kw_only=True):
    """Body of ``PATCH /api/v1/datasets/{task_id}/rows/{row_id}``: one review decision.

    ``value`` is the new value of an edited cell (checked against the field's type); ``reviewer`` names who
    decides (else the API key's owner id is recorded); ``reason`` is kept in the audit trail.
    """

    action: ReviewAction
    field: str | None = None
    value: FieldValue = None
    reason: str = ""
    reviewer: str | None = None


class ReviewEntry(Record, frozen=True, kw_only=True):
    """One decision in a dataset's audit trail: who, when, what changed from what to what, and why."""

    row_id: str
    field: str | None
    action: ReviewAction
    old: FieldValue = None
    new: FieldValue = None
    reason: str = ""
    reviewer: str
    at: float


class CellReview(Record, frozen=True, kw_only=True):
    """A reviewed cell: its status and the value the extraction gave it (``original``)."""

    status: CellStatus
    original: FieldValue = None


class RowReview(Record, frozen=True, kw_only=True):
    """The review state of one row: excluded or not, and its reviewed cells by field."""

    excluded: bool = False
    cells: dict[str, CellReview] = {}
