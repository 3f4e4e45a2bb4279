"""pipeline.screening: a question's topic, and documents judged by how much of it they state."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import snowballstemmer  # type: ignore[import-untyped]

from contracts import Criterion, Document
from pipeline.screening import (
    FAILS_INCLUSION,
    MEETS_EXCLUSION,
    NO_TEXT,
    OFF_TOPIC,
    screen,
    split_descriptor,
    stem,
    topic,
)


def doc(title: str, abstract: str = "", i: int = 0) -> Document:
    return Document(id=f"d{i}", title=title, abstract=abstract, source="local")


def test_a_trailing_study_design_descriptor_is_not_the_topic() -> None:
    subject, descriptor = split_descriptor(
        "Specialized psychotherapies for adults with borderline personality disorder: A systematic review and "
        "meta-analysis"
    )
    assert subject == "Specialized psychotherapies for adults with borderline personality disorder"
    assert descriptor == "A systematic review and meta-analysis"
    # review words that are the subject stay in it
    assert split_descriptor("Systematic literature reviews in software engineering - A tertiary study")[0] == (
        "Systematic literature reviews in software engineering"
    )
    found = topic("Knee osteoarthritis? Meta-Analysis of Randomized Controlled Trials")
    assert found.wants_trials and found.wants_primary and "random" not in found.words


def test_phrases_joined_by_of_are_one_concept() -> None:
    assert topic("Animal models of depression").phrases == [["anim", "model", "depress"]]
    assert len(topic("water treatment technologies used in specialty crop production").phrases) == 2


def test_documents_stating_the_topic_pass_and_others_are_excluded_with_a_reason() -> None:
    """In a pool where "depression" is rare, stating "animal model" alone is not stating the concept."""
    subject = topic("animal models of depression")
    documents = [
        doc("Chronic mild stress as an animal model of depression in rats", "Rats showed anhedonia.", 0),
        doc("Animal models of knee osteoarthritis", "Rabbits received stem cells.", 1),
        doc("A note without abstract", "", 2),
        *(doc(f"Animal model {i} of cartilage repair", "Stem cells in a rabbit model.", 3 + i) for i in range(4)),
    ]
    on, off, empty, *_ = screen(documents, subject)
    assert on.included and on.score == 1.0 and on.quote is not None and "depression" in on.quote
    assert not off.included and off.exclusion == OFF_TOPIC and "depression" in off.reason
    assert not empty.included and empty.exclusion == NO_TEXT


def test_criteria_include_and_exclude() -> None:
    subject = topic(
        "stem cells for knee osteoarthritis",
        [Criterion(text="randomised trial", kind="include"), Criterion(text="rabbits", kind="exclude")],
    )
    trial, rabbits, neither = screen(
        [
            doc("Stem cells for knee osteoarthritis", "A randomised trial in 40 patients.", 0),
            doc("Stem cells for knee osteoarthritis in rabbits", "A randomised trial in rabbits.", 1),
            doc("Stem cells for knee osteoarthritis", "A case series of 12 patients.", 2),
        ],
        subject,
    )
    assert trial.included
    assert rabbits.exclusion == MEETS_EXCLUSION and "rabbits" in rabbits.reason
    assert neither.exclusion == FAILS_INCLUSION and "randomised trial" in neither.reason


def test_reviews_rank_below_primary_studies_when_the_question_is_a_review() -> None:
    subject = topic("Stem cells for knee osteoarthritis: a systematic review")
    review, study = screen(
        [
            doc("Stem cells for knee osteoarthritis: a systematic review", "We pooled 12 stem cell trials.", 0),
            doc("Stem cells for knee osteoarthritis", "Stem cells improved knee scores.", 1),
        ],
        subject,
    )
    assert review.included and study.included
    assert review.rank_score < study.rank_score and "itself a review" in review.reason


def test_a_question_asking_for_trials_excludes_papers_that_report_none() -> None:
    subject = topic("Stem cells for knee osteoarthritis: a meta-analysis of randomized controlled trials")
    trial, series = screen(
        [
            doc("Stem cells for knee osteoarthritis", "A randomized trial of stem cells in 60 knees.", 0),
            doc("Stem cells for knee osteoarthritis", "A case series of stem cells in 12 knees.", 1),
        ],
        subject,
    )
    assert trial.included
    assert not series.included and series.exclusion == FAILS_INCLUSION and "trial" in series.reason


def test_generic_modifiers_are_not_concepts() -> None:
    subject = topic("Specialized psychotherapies for adults with borderline personality disorder")
    assert "special" not in subject.words and ["psychotherapi"] in subject.phrases


def test_stemming_is_safe_on_many_threads_at_once() -> None:
    """Workers screen on several threads; a shared Snowball stemmer mixes their words up (IndexError or
    wrong stems). Fresh words each time, so the cache cannot hide it."""
    words_ = [f"{base}{i}ations" for i in range(4000) for base in ("organis", "realis")]
    expected = {w: snowballstemmer.stemmer("english").stemWord(w) for w in words_}
    with ThreadPoolExecutor(8) as pool:
        found = dict(zip(words_, pool.map(stem, words_), strict=True))
    assert found == expected
