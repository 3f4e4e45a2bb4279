"""pipeline.entities: abbreviations, entity keys and the fuzzy matcher that groups variants of one entity."""

from __future__ import annotations

import random

import pytest
from rapidfuzz import fuzz

from pipeline.entities import GENERIC_WORDS, EntityMatcher, aliases_from, entity_key, find_abbreviations

NAMES = [
    "Reverse osmosis (RO)",
    "reverse osmosis",
    "RO",
    "Reverse-osmosis systems",
    "Constructed wetlands",
    "constructed wetland",
    "Sand filtration",
    "filtration",
    "Membrane filtration",
    "Ozonation",
    "ozonization",
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reverse osmosis (RO) membranes", {"ro": "reverse osmosis"}),
        ("Ultraviolet (UV) light", {"uv": "ultraviolet"}),
        ("RO (reverse osmosis)", {"ro": "reverse osmosis"}),
        ("UV (ultraviolet) disinfection", {"uv": "ultraviolet"}),
        ("Plants used membrane bioreactors (MBRs).", {"mbr": "membrane bioreactor"}),
        ("treated by reverse osmosis (RO) and ultraviolet (UV).", {"ro": "reverse osmosis", "uv": "ultraviolet"}),
        ("in 2019 (n=4)", {}),
        ("filtration (sand)", {}),
        ("sludge (settled sludge)", {}),
        ("membranes (RO)", {}),
        ("(RO) alone", {}),
        ("UV (UV-C)", {}),  # the short form inside its own long form
        ("", {}),
    ],
)
def test_find_abbreviations(text: str, expected: dict[str, str]) -> None:
    assert find_abbreviations(text) == expected


def test_find_abbreviations_long_form_stays_within_the_sentence() -> None:
    assert find_abbreviations("Chemical dosing. Wetlands (CW) were used.") == {}
    assert find_abbreviations("Chemical dosing; constructed wetlands (CW) were used.") == {"cw": "constructed wetland"}


def test_aliases_from_majority_and_ties() -> None:
    texts = [
        "reverse osmosis (RO)",
        "RO (reverse osmosis)",
        "rotary oven (RO)",
        "ultraviolet (UV)",
        "UV (UV-C)",  # not an abbreviation: ignored
        "activated sludge (AS)",
        "aerated system (AS)",
    ]
    assert aliases_from(texts) == {"ro": "reverse osmosis", "uv": "ultraviolet", "as": "activated sludge"}
    assert aliases_from([]) == {}


@pytest.mark.parametrize(
    ("value", "aliases", "expected"),
    [
        ("Reverse osmosis (RO)", {}, "reverse osmosis"),
        ("RO", {"ro": "reverse osmosis"}, "reverse osmosis"),
        ("RO systems", {"ro": "reverse osmosis"}, "reverse osmosis system"),
        ("ROs", {"ro": "reverse osmosis"}, "reverse osmosis"),
        ("Reverse-Osmosis Systems", {}, "reverse osmosis system"),
        ("  Constructed   wetlands; ", {}, "constructed wetland"),
        ("Ｏｚｏｎａｔｉｏｎ", {}, "ozonation"),  # NFKC: full-width letters
        ("UV-LED [ref 3]", {}, "uv led"),
        ("(RO)", {}, "ro"),  # nothing outside the parentheses: keep what is inside
        ("   ", {}, ""),
    ],
)
def test_entity_key(value: str, aliases: dict[str, str], expected: str) -> None:
    assert entity_key(value, aliases) == expected


def test_generic_words_are_singular_lower_case() -> None:
    assert {"system", "method", "process", "technology", "treatment", "unit"} <= GENERIC_WORDS
    assert all(w == w.lower() for w in GENERIC_WORDS)


def test_same_keeps_specific_words_apart() -> None:
    m = EntityMatcher()
    assert m.same("reverse osmosis", "reverse osmosis")
    assert m.same("reverse osmosis", "osmosis reverse")
    assert m.same("reverse osmosis", "reverse osmosis system")
    assert m.same("reverse osmosis system", "reverse osmosis process")
    assert not m.same("filtration", "sand filtration")
    assert not m.same("sand filtration", "membrane filtration")
    assert not m.same("uv", "uv led")
    assert not m.same("treatment", "water treatment")
    assert m.same("treatment", "treatment system")


def test_realistic_variants_group() -> None:
    assert fuzz.token_set_ratio("ozonation", "ozonization") >= 90
    m = EntityMatcher(aliases=aliases_from(NAMES))
    assert m.group(NAMES) == [0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 5]


def test_without_aliases_a_bare_abbreviation_stays_apart() -> None:
    assert EntityMatcher().group(["Reverse osmosis (RO)", "RO"]) == [0, 1]


def test_threshold() -> None:
    a, b = "ozonation", "ozonization"
    assert 80 <= fuzz.token_set_ratio(a, b) < 95
    assert EntityMatcher(threshold=80).same(a, b)
    assert not EntityMatcher(threshold=95).same(a, b)
    assert EntityMatcher(threshold=80).group([a, b]) == [0, 0]
    assert EntityMatcher(threshold=95).group([a, b]) == [0, 1]


def test_generic_words_from_the_caller() -> None:
    assert not EntityMatcher().same("ozone", "ozone nanobubble")
    m = EntityMatcher(generic=["technologies", "Nanobubbles"])
    assert m.same("ozone", "ozone technology")
    assert m.same("ozone", "ozone nanobubble")
    assert m.group(["Ozone", "ozone technologies"]) == [0, 0]


def test_empty_keys_never_merge() -> None:
    m = EntityMatcher()
    assert not m.same("", "")
    assert not m.same("  ", "ozone")
    assert not m.same("ozone", "")
    assert m.group(["", "  ", "Ozone", "---", "ozone", ""]) == [0, 1, 2, 3, 2, 4]


def test_group_joins_the_first_matching_group() -> None:
    m = EntityMatcher()
    values = ["reverse osmosis", "sand filtration", "reverse osmosis unit", "Sand filtrations", "filtration"]
    assert m.group(values) == [0, 1, 0, 1, 2]
    # "ozonization" is the same as both "ozonation" and "ozonizaton", which differ from each other: first group wins
    assert not m.same("ozonation", "ozonizaton")
    assert m.same("ozonization", "ozonation")
    assert m.same("ozonization", "ozonizaton")
    assert m.group(["ozonation", "ozonizaton", "ozonization"]) == [0, 1, 0]
    assert m.group(["ozonizaton", "ozonation", "ozonization"]) == [0, 1, 0]
    assert m.group([]) == []


def test_group_many_values() -> None:
    rng = random.Random(7)
    syllables = ["ra", "to", "mi", "ke", "ka", "sa", "no", "ve", "ne", "po", "zu", "ga"]
    bases = list(
        dict.fromkeys(
            " ".join("".join(rng.choice(syllables) for _ in range(4)) for _ in range(rng.randint(1, 3)))
            for _ in range(1000)
        )
    )
    suffixes = ["", "s", " system", " (X)", " process", "-unit"]
    picks = [rng.randrange(len(bases)) for _ in range(5000)]
    values = [bases[i] + rng.choice(suffixes) for i in picks]
    groups = EntityMatcher().group(values)
    assert len(groups) == 5000
    firsts = list(dict.fromkeys(groups))
    assert firsts == list(range(len(firsts)))  # numbered in order of first appearance
    # every variant of a base lands in the base's group
    by_base: dict[int, set[int]] = {}
    for i, g in zip(picks, groups, strict=True):
        by_base.setdefault(i, set()).add(g)
    assert all(len(gs) == 1 for gs in by_base.values())
