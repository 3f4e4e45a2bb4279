"""Cost estimates, pure parts: prices from the environment, the calls counted, budgets, money and the guess."""

from __future__ import annotations

import msgspec
import pytest

from contracts import Document, Estimate, Event, FieldDefinition, GenerateRequest, JobRecord, ReprocessRequest
from contracts.progress import EstimateReady, read_data
from pipeline import estimate as estimating
from pipeline.errors import SettingsError
from pipeline.estimate import PlannedCall, within_budget
from pipeline.extractors.base import ExtractorInfo
from pipeline.extractors.chunks import request_tokens
from pipeline.extractors.llm import chunks_of
from pipeline.extractors.prompts import messages, response_format, screening_format, screening_messages
from pipeline.schema import prepare_schema
from pipeline.settings import Settings
from pipeline.store.extraction import LlmUsage
from pipeline.webhooks import payload
from tests.fixtures.requests import seed_request

LLM = ExtractorInfo(name="openai", provider="openai", base_url="https://api.openai.com/v1", model="gpt-4o-mini")
SCHEMA = prepare_schema(
    "Practices",
    [
        FieldDefinition(name="technology_name", description="Name of the technology"),
        FieldDefinition(name="year", type="int", required=False),
    ],
)


def documents(count: int, full_text: str | None = None) -> list[Document]:
    return [
        Document(
            id=f"d{i}",
            title=f"Sand filtration trial {i}",
            abstract="Sand filters removed E. coli.",
            full_text=full_text,
            source="local",
        )
        for i in range(count)
    ]


# -- LITMINER_LLM_PRICES ---------------------------------------------------------------------------------


def test_prices_are_read_per_model_in_usd_per_million_tokens():
    settings = Settings.from_env(
        {"LITMINER_LLM_PRICES": "gpt-4o-mini=0.15/0.60, gpt-4o = 2.5/10,meta-llama/Llama-3.1-8B=0/0"}
    )
    assert settings.llm_prices == {
        "gpt-4o-mini": (0.15, 0.6),
        "gpt-4o": (2.5, 10.0),
        "meta-llama/Llama-3.1-8B": (0.0, 0.0),  # a "/" in the model's name is the model's
    }
    assert Settings.from_env({}).llm_prices == {}


@pytest.mark.parametrize("value", ["gpt-4o", "gpt-4o=0.15", "gpt-4o=cheap/dear", "=0.1/0.2", "gpt=-1/2", "gpt=nan/1"])
def test_a_malformed_price_is_a_startup_error_naming_the_variable(value):
    with pytest.raises(SettingsError, match="LITMINER_LLM_PRICES takes model=input/output pairs") as raised:
        Settings.from_env({"LITMINER_LLM_PRICES": value})
    assert repr(value.split(",")[0].strip()) in str(raised.value)


# -- the calls ---------------------------------------------------------------------------------------------


def test_the_calls_are_a_screening_per_batch_and_an_extraction_per_chunk_built_as_the_extractor_builds_them():
    settings = Settings(extract_batch_size=2, llm_chunk_tokens=500)
    long = " ".join(f"Plot {i} was irrigated with filtered water." for i in range(300))
    docs = [*documents(2), msgspec.structs.replace(documents(1, full_text=long)[0], id="long")]
    calls = estimating.plan_calls("sand filters", [], SCHEMA, docs, settings)

    assert [c.document for c in calls[:3]] == [None, "d0", "d1"]
    assert calls[3].document is None  # the second batch's screening
    chunks = chunks_of(docs[2], settings)
    assert len(chunks) > 1 and [c.document for c in calls[4:]] == ["long"] * len(chunks)
    assert calls[0].prompt_tokens == request_tokens(
        screening_messages("sand filters", [], docs[:2]), screening_format(json_schema=True)
    )
    reply = response_format(SCHEMA, json_schema=True)
    assert calls[1].prompt_tokens == request_tokens(messages("sand filters", SCHEMA, docs[0], None), reply)
    assert calls[4].prompt_tokens == request_tokens(messages("sand filters", SCHEMA, docs[2], chunks[0]), reply)


def test_the_guess_grows_with_the_fields_and_the_documents_screened():
    wide = prepare_schema("Wide", [FieldDefinition(name=f"f{i}", type="dict") for i in range(6)])
    narrow = estimating.guessed_completion(SCHEMA, extraction_calls=4, screening_calls=1, documents_per_screening=4)
    assert (
        estimating.guessed_completion(wide, extraction_calls=4, screening_calls=1, documents_per_screening=4)
        > narrow
        > estimating.guessed_completion(SCHEMA, extraction_calls=4, screening_calls=1, documents_per_screening=1)
    )


# -- the estimate ------------------------------------------------------------------------------------------


def calls(*plan: tuple[str | None, int]) -> list[PlannedCall]:
    return [PlannedCall(document, prompt, 10) for document, prompt in plan]


def test_money_budget_and_a_guess_without_history():
    settings = Settings(llm_prices={"gpt-4o-mini": (0.15, 0.60)})
    plan = calls((None, 1000), ("d0", 2000), ("d1", 2000))
    made = estimating.estimate(
        task_id="t",
        info=LLM,
        documents=documents(2),
        batches=1,
        calls=plan,
        usage=LlmUsage(),
        settings=settings,
        budget=2500,
    )
    assert (made.calls, made.screening_calls, made.extraction_calls) == (3, 1, 2)
    assert (made.prompt_tokens, made.completion_tokens, made.completion_basis) == (5000, 30, "guess")
    assert made.cost_usd == round((5000 * 0.15 + 30 * 0.60) / 1_000_000, 6)
    assert made.over_budget and made.documents_within_budget == 1
    assert "over the budget of 2,500 tokens: 1 of 2 would be read" in estimating.summary(made)


def test_history_scales_the_guess_and_an_unpriced_model_has_no_cost():
    usage = LlmUsage(runs=3, calls=40, completion_tokens=600, guessed_tokens=400)
    made = estimating.estimate(
        task_id="t",
        info=LLM,
        documents=documents(1),
        batches=1,
        calls=calls((None, 100), ("d0", 100)),
        usage=usage,
        settings=Settings(),
        budget=0,
    )
    assert (made.completion_tokens, made.completion_basis, made.history_runs) == (30, "history", 3)
    assert made.cost_usd is None and made.input_price is None
    assert not made.over_budget and made.documents_within_budget == 1


def test_an_extractor_without_llm_costs_nothing():
    heuristic = ExtractorInfo(name="heuristic")
    made = estimating.estimate(
        task_id="t",
        info=heuristic,
        documents=documents(3),
        batches=1,
        calls=[],
        usage=LlmUsage(runs=2, completion_tokens=5, guessed_tokens=5),
        settings=Settings(),
        budget=10,
    )
    assert (made.calls, made.prompt_tokens, made.completion_tokens, made.cost_usd) == (0, 0, 0, 0.0)
    assert (made.completion_basis, made.history_runs, made.over_budget, made.documents_within_budget) == (
        "none",
        0,
        False,
        3,
    )


def test_within_budget_reads_a_started_document_whole_and_skips_screening_once_spent():
    docs = documents(4)
    plan = calls((None, 50), ("d0", 40), ("d0", 40), ("d1", 100), (None, 50), ("d2", 10), ("d3", 10))
    assert within_budget(docs, plan, 0, 1.0) == 4
    # d0 starts at 60 spent and is read whole (two chunks); d1 starts at 160 < 200; at 270 nothing more starts
    assert within_budget(docs, plan, 200, 1.0) == 2
    assert within_budget(docs, plan, 1, 1.0) == 0  # the first screening spends it
    assert within_budget(docs, plan, 10**6, 1.0) == 4


# -- contracts ---------------------------------------------------------------------------------------------


def test_the_event_data_and_the_estimate_travel_as_json():
    ready = EstimateReady(
        documents=2,
        calls=3,
        prompt_tokens=10,
        completion_tokens=4,
        completion_basis="guess",
        budget=0,
        over_budget=False,
        documents_within_budget=2,
    )
    data = ready.as_data()
    assert data["kind"] == "estimate_ready" and data["budget"] == 0 and data["over_budget"] is False
    assert "cost_usd" not in data and read_data(data) == ready
    estimate = Estimate(
        task_id="t",
        extractor="openai",
        documents=1,
        batches=1,
        screening_calls=1,
        extraction_calls=1,
        calls=2,
        prompt_tokens=5,
        completion_tokens=1,
        completion_basis="guess",
    )
    assert msgspec.json.decode(msgspec.json.encode(estimate), type=Estimate) == estimate


@pytest.mark.parametrize("kind", [GenerateRequest, ReprocessRequest])
def test_max_tokens_is_at_least_one(kind):
    base = (
        {"user_query": "q", "field_definitions": [{"name": "a"}]}
        if kind is GenerateRequest
        else {"from_stage": "extraction"}
    )
    assert msgspec.convert(base | {"max_tokens": 5}, kind).max_tokens == 5
    with pytest.raises(msgspec.ValidationError, match=r"max_tokens"):
        msgspec.convert(base | {"max_tokens": 0}, kind)


def test_the_webhook_of_an_estimate_links_no_dataset():
    job = JobRecord(
        task_id="6f1c7d52-8f7e-4d5b-9a0e-3f1d2c4b5a69",
        client_id="c",
        request=seed_request(),
        created_at=1.0,
        updated_at=2.0,
        status="completed",
        stage="done",
        estimate=True,
    )
    event = Event(
        task_id=job.task_id,
        client_id="c",
        seq=9,
        status="completed",
        stage="done",
        message="Estimate: …",
        progress=100,
        timestamp=1.0,
    )
    sent = payload(job, event)
    assert sent.type == "task.completed" and sent.dataset_url is None
    assert payload(msgspec.structs.replace(job, estimate=False), event).dataset_url is not None
