"""The HTTP API fuzzed: every OpenAPI operation (schemathesis) and any generate or reprocess body (hypothesis).

Schemathesis drives the operations the OpenAPI document (``/schema/openapi.json``) describes; hypothesis drives
what it cannot: the generate and reprocess bodies (read by hand from JSON or form bodies). The contract checked
everywhere (``tests/fixtures/fuzz.py``): never a 5xx, and every 4xx is JSON with a non-empty ``detail`` (plus the
``field`` it is about, for the 400s of request validation). The endless ``/sse/{client_id}`` stream is fuzzed in
``test_live_events.py``.

Run with ``-s`` to see one ``fuzz: <operation>: N requests, statuses {…}`` line per operation.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import CheckContext, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case as AnyCase

from pipeline.settings import Settings
from tests.fixtures.fuzz import FIELDS, VALID, Tally, bounded, cancel, completed_job, problems, submit

Case = AnyCase[Any]

pytestmark = [
    pytest.mark.timeout(180),
    # schemathesis' own strategies draw from `random`; hypothesis warns about it on every example
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

SCHEMATHESIS_EXAMPLES = 30  # per operation and strategy (positive, negative, existing task ids)
BODY_EXAMPLES = 110  # JSON and form bodies, each, per endpoint
ODD_EXAMPLES = 30  # odd content types and multipart bodies, each, per endpoint


def client_errors_explain_themselves(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool | None:
    """Schemathesis check: a 4xx carries JSON with a non-empty ``detail``."""
    found = problems(response.status_code, response.content)
    if found:
        raise AssertionError(found[0])
    return None


# -- schemathesis: every operation of the OpenAPI document ----------------------------------------------------

#: streams without end on any valid client id: fuzzed in test_live_events.py with a stream closed after the headers
ENDLESS = "/sse/{client_id}"


def test_openapi_operations_never_fail(
    fuzz_url: str, fuzz_settings: Settings, make_jobs, run_worker, tally: Tally
) -> None:
    """Positive and negative cases of every operation, also on task ids that exist: no 5xx, 4xx explained."""
    jobs = make_jobs(settings_=fuzz_settings)
    cancelled = cancel(fuzz_url, submit(fuzz_url))  # before any worker runs: a job finishes in milliseconds
    worker = run_worker(settings_=fuzz_settings)  # /ready is ready, and the jobs below really run
    try:
        finished = completed_job(fuzz_url, jobs)
        # the worker keeps running: /ready answers 200, and a task followed over SSE ends with its last event

        schema = schemathesis.openapi.from_url(f"{fuzz_url}/schema/openapi.json").exclude(path=ENDLESS)
        failures: list[str] = []
        operations = 0
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            operations += 1
            label = operation.label
            strategies = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]
            if "{task_id}" in operation.path:  # task ids are UUIDs: also ones that exist, and ones that do not
                positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
                task_ids = st.one_of(st.sampled_from([finished, cancelled]), st.uuids().map(str))
                strategies.append(st.builds(with_task_id, positive, task_ids))

            failure = fuzz_operation(fuzz_url, label, strategies, tally)
            if failure:
                failures.append(failure)
    finally:
        worker.stop()
    assert operations >= 10, "the OpenAPI document lost its operations"
    assert not failures, "\n\n".join(failures)


def with_task_id(case: Case, task_id: str) -> Case:
    case.path_parameters = {**(case.path_parameters or {}), "task_id": task_id}
    return case


def fuzz_operation(url: str, label: str, strategies: list[st.SearchStrategy[Case]], tally: Tally) -> str | None:
    """Call one operation with cases from ``strategies``; the failure schemathesis reports (shrunk), if any."""

    @bounded(SCHEMATHESIS_EXAMPLES * len(strategies))
    @given(case=st.one_of(strategies))
    def fuzz(case: Case) -> None:
        response = case.call(base_url=url, timeout=10)
        tally.record(label, response.status_code)
        case.validate_response(response, checks=[not_a_server_error, client_errors_explain_themselves])

    try:
        fuzz()
    except (FailureGroup, OSError, requests.RequestException) as failure:  # a 5xx, a 4xx unexplained, a hang
        return f"{label}: {failure!r:.3000}"
    finally:
        print(tally.line(label))
    return None


# -- hypothesis: the bodies OpenAPI does not describe ---------------------------------------------------------

REQUEST_FIELDS = [
    "user_query", "rows", "model_name", "field_definitions", "field_definitions_json_str", "client_id", "sources",
    "extractor", "from_stage",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=16,
)
lone_surrogates = st.tuples(st.text(max_size=3), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)).map("".join)
names = st.one_of(
    st.sampled_from(["a", "technology_name", "crop_id", "_x", "1a", "a b", "", "class"]), st.text(max_size=12)
)
definition = st.fixed_dictionaries(
    {"name": names},
    optional={
        "type": st.one_of(st.sampled_from(["str", "int", "list[str]", "date", "decimal", "List[str]"]), json_values),
        "description": st.one_of(st.text(), json_values),
        "required": st.one_of(st.booleans(), json_values),
        "colour": json_values,
    },
)
definitions = st.one_of(st.lists(definition, max_size=6), json_values)

#: a plausible value for each real field (right or wrong): what a real client might send
plausible: dict[str, st.SearchStrategy[Any]] = {
    "user_query": st.sampled_from(["ozonation", "   ", "", "water treatment in crops"]),
    "rows": st.sampled_from([1, 5, 100, 0, 101, -1, "5", "many", "1e3", 2.0, 10**30]),
    "model_name": st.sampled_from(["Tech", "My Model", "1M", "None", "Données", "Δεδομένα"]),
    "field_definitions": st.sampled_from([FIELDS, [], [{"name": "crop_id", "type": "int"}], [{"name": "a b"}]]),
    "field_definitions_json_str": st.sampled_from(
        [json.dumps(FIELDS), "[{", "[]", "[" * 5000 + "]" * 5000, "[" + "9" * 5000 + "]", '[{"name": "\\ud800"}]']
    ),
    "client_id": st.sampled_from(["c-1", "", "bad id/slash", "a" * 129, "x:y.z_1"]),
    "sources": st.sampled_from([["local"], "local", "local, nowhere", ["nowhere"], [], None]),
    "extractor": st.sampled_from(["auto", "heuristic", "openai", "magic", "", None]),
    "from_stage": st.sampled_from(["search", "extraction", "assembly", "schema_preparation", "done"]),
}
#: anything at all for each real field
wild: dict[str, st.SearchStrategy[Any]] = {
    "field_definitions": definitions,
    "field_definitions_json_str": st.one_of(definitions.map(json.dumps), st.text(), json_values),
    "user_query": st.one_of(st.text(), json_values),
    "model_name": st.one_of(st.text(), json_values),
    "client_id": st.one_of(st.text(), json_values),
}


@st.composite
def mixed_objects(draw: st.DrawFn, base: dict[str, object]) -> dict[str, object]:
    """``base`` with some real fields given plausible or wild values, some dropped, maybe an unknown one added."""
    body = dict(base)
    for name in draw(st.lists(st.sampled_from(REQUEST_FIELDS), max_size=3, unique=True)):
        match draw(st.integers(0, 3)):
            case 0:
                body.pop(name, None)
            case 1:
                body[name] = draw(wild.get(name, json_values))
            case _:
                body[name] = draw(plausible[name])
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.one_of(st.text(max_size=8), lone_surrogates))] = draw(st.one_of(json_values, lone_surrogates))
    return body


#: values the API accepts for each field (so the fuzzer reaches 202, and the 404 and 409 behind validation)
ACCEPTED: dict[str, st.SearchStrategy[Any]] = {
    "user_query": st.text(min_size=1).filter(str.strip),
    "rows": st.one_of(st.integers(1, 100), st.integers(1, 100).map(str)),
    "model_name": st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,30}", fullmatch=True),
    "client_id": st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True),
    "sources": st.sampled_from([["local"], "local", None]),
    "extractor": st.sampled_from(["auto", "heuristic", None]),
    "from_stage": st.sampled_from(["search", "extraction", "assembly"]),
}


@st.composite
def accepted_objects(draw: st.DrawFn, base: dict[str, object]) -> dict[str, object]:
    """``base`` with some of its fields (and optional ones) given other values the API accepts."""
    names = [name for name in ACCEPTED if name in base or name in ("client_id", "sources", "extractor")]
    body = dict(base)
    for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        body[name] = draw(ACCEPTED[name])
    return body


def json_bodies(base: dict[str, object]) -> st.SearchStrategy[bytes]:
    others = st.one_of(
        st.dictionaries(st.sampled_from(REQUEST_FIELDS), json_values, max_size=6),
        st.dictionaries(st.text(max_size=10), json_values, max_size=4),
        json_values,  # not an object at all
    )
    return st.one_of(
        accepted_objects(base).map(lambda d: json.dumps(d).encode()),
        mixed_objects(base).map(lambda d: json.dumps(d).encode()),
        others.map(lambda d: json.dumps(d).encode()),
        st.sampled_from([b"", b"{", b"\xff\xfe{}", b"[" * 100_000, b'{"rows": ' + b"9" * 5000 + b"}", b"null"]),
        st.binary(max_size=64),
    )


form_text = st.text(max_size=30)


def form_bodies(base: dict[str, object]) -> st.SearchStrategy[bytes]:
    """URL-encoded forms: the real field names (values as text) and wild names; raw bytes too."""

    def encode(fields: list[tuple[str, str]]) -> bytes:
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in fields).encode()

    def as_form(body: dict[str, object]) -> list[tuple[str, str]]:
        """A body as the seed's form sends it: text values, the field list as a JSON string, no nulls."""
        form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items() if v is not None}
        if "field_definitions" in form:
            form["field_definitions_json_str"] = form.pop("field_definitions")
        return list(form.items())

    fields = st.lists(st.tuples(st.one_of(st.sampled_from(REQUEST_FIELDS), st.text(max_size=8)), form_text))
    return st.one_of(
        accepted_objects(base).map(lambda body: encode(as_form(body))),
        st.builds(
            lambda extra: encode([*as_form(base), *extra]),
            st.lists(st.tuples(st.sampled_from(REQUEST_FIELDS), form_text), max_size=3),
        ),
        fields.map(encode),
        st.binary(max_size=64),
        st.sampled_from([b"%", b"a=%ff%fe", b"user_query=%ED%A0%80", b"&&&=", b"user_query", b"=" * 100]),
    )


content_types = st.sampled_from(
    ["application/json", "application/json; charset=latin-1", "text/plain", "", "multipart/form-data",
     "multipart/form-data; boundary=x", "application/x-www-form-urlencoded; charset=utf-8"]
)  # fmt: skip


def fuzz_bodies(http: httpx.Client, urls: list[str], base: dict[str, object], label: str, tally: Tally) -> None:
    """POST JSON, form and odd bodies (``base`` made wild) to one of ``urls``: 202 or an explained 4xx, never 5xx."""
    failures: list[str] = []
    targets = st.sampled_from(urls)

    def post(url: str, content_type: str, **request: Any) -> None:
        headers = {"content-type": content_type} if content_type else {}
        reply = http.post(url, headers=headers, **request)
        tally.record(label, reply.status_code)
        found = problems(reply.status_code, reply.content, needs_field=True)
        if reply.status_code != 202 and not 400 <= reply.status_code < 500:
            found.append(f"unexpected status {reply.status_code}")
        if found:
            shown = {k: v[:300] if isinstance(v, bytes) else v for k, v in request.items()}
            failures.append(f"POST {url} content-type {content_type!r} {shown!r:.600}: {found}")

    @bounded(BODY_EXAMPLES)
    @given(url=targets, content=json_bodies(base))
    def json_requests(url: str, content: bytes) -> None:
        post(url, "application/json", content=content)

    @bounded(BODY_EXAMPLES)
    @given(url=targets, content=form_bodies(base))
    def form_requests(url: str, content: bytes) -> None:
        post(url, "application/x-www-form-urlencoded", content=content)

    @bounded(ODD_EXAMPLES)
    @given(url=targets, content=st.one_of(json_bodies(base), form_bodies(base)), content_type=content_types)
    def other_requests(url: str, content: bytes, content_type: str) -> None:
        post(url, content_type, content=content)

    @bounded(ODD_EXAMPLES)
    @given(url=targets, fields=multipart_fields)
    def multipart_requests(url: str, fields: dict[str, str | bytes]) -> None:
        files = {k: (f"{k}.txt", v) for k, v in fields.items() if isinstance(v, bytes)}
        data = {k: v for k, v in fields.items() if isinstance(v, str)}
        post(url, "", data=data, files=files or {"upload": ("a.txt", b"x")})  # httpx sets the boundary

    try:
        for run in (json_requests, form_requests, other_requests, multipart_requests):
            run()
    finally:
        print(tally.line(label))
    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:25])


multipart_fields = st.dictionaries(
    st.sampled_from(REQUEST_FIELDS), st.one_of(st.text(max_size=20), st.binary(max_size=20)), max_size=4
)


def test_generate_bodies_never_fail(fuzz_url: str, http: httpx.Client, tally: Tally) -> None:
    """Any JSON, form, multipart or raw body: 202 (a job queued; no worker runs) or a 4xx naming the field."""
    label = "POST /api/v1/datasets/generate (JSON, form, multipart and raw bodies)"
    fuzz_bodies(http, [f"{fuzz_url}/api/v1/datasets/generate"], VALID, label, tally)
    assert tally.statuses[label][202] and tally.statuses[label][400], "the fuzzer should pass and fail validation"


def test_reprocess_bodies_never_fail(fuzz_url: str, http: httpx.Client, tally: Tally) -> None:
    """Any body, to reprocess a finished (cancelled) parent, a queued one or an unknown one: 202, 4xx, never 5xx."""
    cancelled = cancel(fuzz_url, submit(fuzz_url, sources=["local"]))
    queued = submit(fuzz_url)
    parents = [cancelled, queued, str(uuid.uuid4()), "not-a-task-id"]
    base: dict[str, object] = {"from_stage": "search", "rows": 3, "client_id": "fuzz-client"}
    label = "POST /api/v1/tasks/{task_id}/reprocess (JSON, form, multipart and raw bodies)"
    fuzz_bodies(http, [f"{fuzz_url}/api/v1/tasks/{parent}/reprocess" for parent in parents], base, label, tally)
    statuses = tally.statuses[label]
    assert statuses[202] and statuses[400] and statuses[404] and statuses[409]
