"""The API over real HTTP (uvicorn on loopback), with a real worker and Redis."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import follow

SEED_FIELDS = (
    '[{"name":"technology_id","type":"str","description":"Unique identifier for water treatment technology",'
    '"required":true},{"name":"technology_name","type":"str","description":"Name of water treatment technology",'
    '"required":true}]'
)
# The seed's curl body, byte for byte.
SEED_BODY = (
    "user_query=water%20treatment%20technologies%20used%20in%20specialty%20crop%20production&rows=5"
    "&model_name=TreatmentTechnologies&field_definitions_json_str=%5B%7B%22name%22%3A%22technology_id%22%2C%22type"
    "%22%3A%22str%22%2C%22description%22%3A%22Unique%20identifier%20for%20water%20treatment%20technology%22%2C%22"
    "required%22%3Atrue%7D%2C%7B%22name%22%3A%22technology_name%22%2C%22type%22%3A%22str%22%2C%22description%22%3A"
    "%22Name%20of%20water%20treatment%20technology%22%2C%22required%22%3Atrue%7D%5D&client_id=test-client-id-1"
)
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}


def test_seed_curl_is_accepted_and_completes_with_five_rows(api_url, make_jobs, run_worker):
    jobs = make_jobs()
    run_worker()
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", content=SEED_BODY, headers=FORM)
    assert reply.status_code == 202, reply.text
    accepted = reply.json()
    assert accepted["status"] == "queued" and accepted["client_id"] == "test-client-id-1"
    task_id = accepted["task_id"]
    assert accepted["websocket_url"] == "/ws/test-client-id-1"
    assert accepted["sse_url"] == "/sse/test-client-id-1"
    assert accepted["status_url"] == f"/tasks/{task_id}"

    follow(jobs, task_id)
    status = httpx.get(f"{api_url}{accepted['status_url']}").json()
    assert status["status"] == "completed" and status["progress"] == 100
    assert len(status["result"]["rows"]) == 5
    assert status["result"]["schema"][0]["name"] == "technology_id"


def test_json_body_is_accepted_and_client_id_is_generated(api_url, make_jobs):
    body = {"user_query": "ozonation", "rows": 2, "model_name": "M", "field_definitions": json.loads(SEED_FIELDS)}
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=body)
    assert reply.status_code == 202, reply.text
    assert len(reply.json()["client_id"]) == 36
    status = httpx.get(f"{api_url}/tasks/{reply.json()['task_id']}").json()
    assert status["status"] == "queued" and status["result"] is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"field_definitions_json_str": "[{"}, "field_definitions_json_str"),
        ({"field_definitions_json_str": '"text"'}, "field_definitions"),
        ({"field_definitions_json_str": "[]"}, "field_definitions"),
        ({"field_definitions_json_str": json.dumps([{"name": f"f{i}"} for i in range(51)])}, "field_definitions"),
        ({"field_definitions_json_str": '[{"name":"a"},{"name":"a"}]'}, "field_definitions[1].name"),
        # names that differ only by case or Unicode form (fullwidth; composed and decomposed) are duplicates
        ({"field_definitions_json_str": '[{"name":"a"},{"name":"\\uff41"}]'}, "field_definitions[1].name"),
        (
            {"field_definitions_json_str": '[{"name":"id"},{"name":"Crop"},{"name":"crop"}]'},
            "field_definitions[2].name",
        ),
        (
            {"field_definitions_json_str": '[{"name":"\\u00c5ngstr\\u00f6m"},{"name":"A\\u030angstro\\u0308m"}]'},
            "field_definitions[1].name",
        ),
        ({"field_definitions_json_str": '[{"name":"not valid"}]'}, "field_definitions[0].name"),
        ({"field_definitions_json_str": '[{"name":"a","type":"money"}]'}, "field_definitions[0].type"),
        ({"rows": "0"}, "rows"),
        ({"rows": "1000"}, "rows"),
        ({"user_query": ""}, "user_query"),
        ({"model_name": "not-an-identifier"}, "model_name"),
        ({"sources": "nowhere"}, "sources"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(api_url, make_jobs, settings, changes, field):
    jobs = make_jobs()
    form = dict(
        user_query="water treatment", rows="5", model_name="M", field_definitions_json_str=SEED_FIELDS, client_id="c1"
    )
    form.update(changes)
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", content=urlencode(form), headers=FORM)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field
    assert field in reply.json()["detail"]
    stored = jobs.store.client.scan_iter(f"{settings.key_prefix}*")
    assert [key for key in stored if not key.decode().startswith(jobs.store.keys.rate_limit)] == []  # no job key


def test_malformed_json_body_and_unknown_content_type_are_400(api_url):
    reply = httpx.post(
        f"{api_url}/api/v1/datasets/generate", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400 and reply.json()["field"] == "body"
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", content=b"x", headers={"content-type": "text/plain"})
    assert reply.status_code == 400 and reply.json()["field"] == "content-type"


def test_unknown_task_is_404_json_and_a_malformed_id_400(api_url):
    unknown = str(uuid.uuid4())
    for method, path in [("GET", "/tasks/{}"), ("GET", "/tasks/{}/revoke"), ("POST", "/tasks/{}/revoke")]:
        reply = httpx.request(method, f"{api_url}{path.format(unknown)}")
        assert reply.status_code == 404
        assert unknown in reply.json()["detail"]
        reply = httpx.request(method, f"{api_url}{path.format('nope')}")
        assert reply.status_code == 400 and reply.json()["field"] == "task_id"


def test_revoke_queued_then_again_then_finished_is_409(api_url, make_jobs, run_worker):
    jobs = make_jobs()
    queued = httpx.post(f"{api_url}/api/v1/datasets/generate", content=SEED_BODY, headers=FORM).json()
    first = httpx.get(f"{api_url}/tasks/{queued['task_id']}/revoke")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    second = httpx.post(f"{api_url}/tasks/{queued['task_id']}/revoke")
    assert second.status_code == 200 and second.json()["status"] == "cancelled"

    run_worker()
    done = httpx.post(f"{api_url}/api/v1/datasets/generate", content=SEED_BODY, headers=FORM).json()
    follow(jobs, done["task_id"])
    refused = httpx.post(f"{api_url}/tasks/{done['task_id']}/revoke")
    assert refused.status_code == 409
    assert "completed" in refused.json()["detail"]


def test_health_and_openapi(api_url):
    assert httpx.get(f"{api_url}/health").json() == {"status": "ok"}
    spec = httpx.get(f"{api_url}/schema/openapi.json").json()
    assert "/api/v1/datasets/generate" in spec["paths"] and "/tasks/{task_id}" in spec["paths"]


@pytest.mark.parametrize(
    ("criteria", "field"),
    [
        ([{"text": "  ", "kind": "include"}], "criteria[0].text"),
        ([{"text": "rabbits", "kind": "maybe"}], "criteria[0].kind"),
        ([{"text": "x" * 501}], "criteria[0].text"),
        ([{"text": f"c{i}"} for i in range(21)], "criteria"),
        ("randomised trials", "criteria"),
    ],
)
def test_bad_criteria_are_a_400_naming_the_field(api_url, make_jobs, settings, criteria, field):
    jobs = make_jobs()
    body = {
        "user_query": "stem cells for knee osteoarthritis",
        "field_definitions": [{"name": "cell_source"}],
        "criteria": criteria,
    }
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field, reply.json()
    stored = jobs.store.client.scan_iter(f"{settings.key_prefix}*")
    assert [key for key in stored if not key.decode().startswith(jobs.store.keys.rate_limit)] == []
