"""The fake Chat Completions server, driven by the real openai client."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from tests.fixtures.llm import Call, FakeLLM, Reply, echo_rows, rows_reply

FIELDS = ["technology_name", "removal_pct", "cost"]
SCHEMA_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "rows",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "rows": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "values": {
                                "type": "object",
                                "properties": {name: {"type": ["string", "null"]} for name in FIELDS},
                            },
                            "evidence": {
                                "type": "object",
                                "properties": {name: {"type": ["string", "null"]} for name in FIELDS},
                            },
                        },
                    },
                }
            },
        },
    },
}
DOCUMENT = (
    "Title: Slow sand filtration of irrigation water\n"
    "Abstract: Filters removed 99% of Pythium.\n"
    "Full text:\nMethods were simple."
)


def messages(document: str = DOCUMENT) -> list[ChatCompletionMessageParam]:
    system = f"Extract rows as JSON.\nFields: {', '.join(FIELDS)}"
    user = f"Query: water treatment\n<document>\n{document}\n</document>\nAnswer with JSON."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def client(llm: FakeLLM, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.url, api_key="sk-test", max_retries=max_retries, timeout=5)


def complete(llm: FakeLLM, response_format: Any = SCHEMA_FORMAT, max_retries: int = 0) -> Any:
    return client(llm, max_retries).chat.completions.create(
        model="gpt-test", messages=messages(), response_format=response_format
    )


def test_a_scripted_reply_parses_and_usage_is_counted(llm: FakeLLM) -> None:
    llm.script(rows_reply(({"technology_name": "SSF"}, {"technology_name": "Slow sand filtration"})))
    completion = complete(llm)
    assert completion.id == "chatcmpl-1"
    assert completion.model == "gpt-test"
    assert completion.choices[0].finish_reason == "stop"
    content = json.loads(completion.choices[0].message.content or "")
    values, evidence = {"technology_name": "SSF"}, {"technology_name": "Slow sand filtration"}
    assert content == {"rows": [{"values": values, "evidence": evidence}]}
    assert completion.usage is not None
    prompt_chars = sum(len(str(m["content"])) for m in messages())
    assert completion.usage.prompt_tokens == prompt_chars // 4 == llm.prompt_tokens
    assert completion.usage.completion_tokens == len(completion.choices[0].message.content or "") // 4
    assert llm.completion_tokens == completion.usage.completion_tokens
    assert completion.usage.total_tokens == llm.prompt_tokens + llm.completion_tokens
    (call,) = llm.calls
    assert call.body["model"] == "gpt-test"
    assert call.body["response_format"] == SCHEMA_FORMAT
    assert call.headers["authorization"] == "Bearer sk-test"


def test_the_client_retries_a_429_that_says_retry_after(llm: FakeLLM) -> None:
    llm.script(Reply(status=429, headers={"retry-after": "0", "retry-after-ms": "10"}), rows_reply())
    completion = complete(llm, max_retries=1)
    assert json.loads(completion.choices[0].message.content or "") == {"rows": []}
    assert len(llm.calls) == 2


def test_a_429_without_retries_raises_rate_limit_error_with_the_message(llm: FakeLLM) -> None:
    llm.script(Reply(status=429, message="slow down", headers={"retry-after": "0"}))
    with pytest.raises(openai.RateLimitError, match="slow down") as caught:
        complete(llm)
    assert caught.value.response.headers["retry-after"] == "0"
    assert llm.prompt_tokens == 0


def test_401_raises_authentication_error(llm: FakeLLM) -> None:
    llm.script(Reply(status=401, message="Incorrect API key provided: sk-test."))
    with pytest.raises(openai.AuthenticationError) as caught:
        complete(llm)
    assert caught.value.code == "invalid_api_key"
    assert caught.value.status_code == 401


def test_500_raises_internal_server_error(llm: FakeLLM) -> None:
    llm.script(Reply(status=500))
    with pytest.raises(openai.InternalServerError):
        complete(llm)


def test_rejecting_json_schema_is_a_bad_request_while_json_object_passes(llm: FakeLLM) -> None:
    llm.rejects_json_schema = True
    with pytest.raises(openai.BadRequestError, match="json_schema") as caught:
        complete(llm)
    assert caught.value.param == "response_format"
    completion = complete(llm, response_format={"type": "json_object"})
    content = json.loads(completion.choices[0].message.content or "")
    assert content["rows"][0]["values"]["technology_name"] == "Slow sand filtration of irrigation water"
    assert [c.body["response_format"] for c in llm.calls] == [SCHEMA_FORMAT, {"type": "json_object"}]


def test_json_object_mode_needs_the_word_json_in_the_messages_as_the_real_api_does(llm: FakeLLM) -> None:
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        client(llm).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hello"}], response_format={"type": "json_object"}
        )


def meet(parties: int):
    """A responder that answers only once ``parties`` requests are being served at the same time."""
    barrier = threading.Barrier(parties, timeout=10)

    def respond(call: Call) -> Reply:
        barrier.wait()  # a server that served requests one by one would break the barrier: a 500
        return echo_rows(call)

    return respond


def test_concurrent_requests_are_served_at_the_same_time(llm: FakeLLM) -> None:
    llm.responder = meet(8)
    openai_client = client(llm)

    def one(_: int) -> ChatCompletion:
        return openai_client.chat.completions.create(model="gpt-test", messages=messages())

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    assert len({r.id for r in results}) == 8


def test_the_async_client_runs_sixteen_requests_at_once(llm: FakeLLM) -> None:
    llm.responder = meet(16)

    async def run() -> list[ChatCompletion]:
        async with openai.AsyncOpenAI(base_url=llm.url, api_key="sk-test", max_retries=0, timeout=15) as aclient:
            return await asyncio.gather(
                *(aclient.chat.completions.create(model="gpt-test", messages=messages()) for _ in range(16))
            )

    assert len(asyncio.run(run())) == 16 and len(llm.calls) == 16


def test_models_lists_the_one_fake_model(llm: FakeLLM) -> None:
    models = client(llm).models.list()
    assert [m.id for m in models.data] == ["fake-model"]


def test_unknown_paths_are_openai_style_404s(llm: FakeLLM) -> None:
    with pytest.raises(openai.NotFoundError):
        client(llm).embeddings.create(model="x", input="hello")
    assert llm.calls == []


def test_call_document_extracts_the_delimited_text() -> None:
    call = Call(body={"messages": messages()}, headers={})
    assert call.document == DOCUMENT
    assert Call(body={"messages": [{"role": "user", "content": "no document here"}]}, headers={}).document == ""
    assert Call(body={}, headers={}).document == ""


def test_call_field_names_come_from_the_schema_else_the_fields_line() -> None:
    with_schema = Call(body={"messages": [], "response_format": SCHEMA_FORMAT}, headers={})
    assert with_schema.field_names == FIELDS
    system = {"role": "system", "content": "Be careful.\nFields: a, b , c\nAnswer in JSON."}
    assert Call(body={"messages": [system]}, headers={}).field_names == ["a", "b", "c"]


def test_echo_rows_cites_the_title_for_the_key_field_and_nulls_the_rest() -> None:
    reply = echo_rows(Call(body={"messages": messages(), "response_format": SCHEMA_FORMAT}, headers={}))
    title = "Slow sand filtration of irrigation water"
    assert reply.status == 200
    assert json.loads(reply.content or "") == {
        "rows": [
            {
                "values": {"technology_name": title, "removal_pct": None, "cost": None},
                "evidence": {"technology_name": title, "removal_pct": None, "cost": None},
            }
        ]
    }
    empty = echo_rows(Call(body={"messages": messages(document="")}, headers={}))
    assert json.loads(empty.content or "") == {"rows": []}


def test_a_failing_responder_answers_500_with_its_error(llm: FakeLLM) -> None:
    llm.responder = echo_rows
    with pytest.raises(openai.InternalServerError, match="no field names"):
        client(llm).chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "<document>\nTitle: T\n</document>"}],
        )
