"""pipeline.stages.assembly: every candidate row is accounted for, in one row's ``candidates`` or dropped with why."""

from __future__ import annotations

import msgspec

from contracts import CandidateRow, Dataset, FieldValue
from pipeline.stages import assembly
from tests.unit.pipeline.stages.test_assembly import SCHEMA, candidate, request


def named(name: str | None, source: str, rank: int, n: int = 0, **values: FieldValue) -> CandidateRow:
    """A candidate row with its id: the ``n``-th grounded row of document ``source``."""
    return msgspec.structs.replace(candidate(name, source, rank, **values), candidate=f"{source}#{n}")


def accounted(dataset: Dataset) -> list[str]:
    in_rows = [c for row in dataset.rows for c in row.candidates]
    assert len(in_rows) == len(set(in_rows)) and not set(in_rows) & set(dataset.stats.dropped_candidates)
    return sorted(in_rows + list(dataset.stats.dropped_candidates))


def test_merged_kept_and_dropped_candidates_are_each_named_once():
    candidates = [
        named("Reverse osmosis (RO)", "a", 1, removal_percent=97.0),
        named("RO", "b", 2),
        named("reverse-osmosis systems", "b", 2, n=1),
        named("Constructed wetlands", "c", 3),
        named(None, "c", 3, n=1, removal_percent=50.0),  # no name: a required value missing
        named("Sand filtration", "d", 4),
        named("Membrane filtration", "e", 5),
    ]
    dataset = assembly.run("t", request(2), SCHEMA, candidates)

    assert [row.candidates for row in dataset.rows] == [["a#0", "b#0", "b#1"], ["c#0"]]  # best-ranked first
    assert dataset.stats.dropped_candidates == {
        "c#1": "missing a required value: technology_name",
        "d#0": "ranked 3 of 4 distinct rows, below the 2 rows requested",
        "e#0": "ranked 4 of 4 distinct rows, below the 2 rows requested",
    }
    assert accounted(dataset) == sorted(c.candidate for c in candidates)


def test_rows_stored_before_candidate_ids_existed_name_none():
    candidates = [candidate("Reverse osmosis", "a", 1), candidate("Sand filtration", "b", 2)]
    dataset = assembly.run("t", request(1), SCHEMA, candidates)
    assert [row.candidates for row in dataset.rows] == [[]]
    assert dataset.stats.dropped_candidates == {}
