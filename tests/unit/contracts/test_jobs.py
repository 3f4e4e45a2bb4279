"""contracts.jobs: a JobRecord decodes even with fields that newer workers added."""

import time

import msgspec

from contracts import FieldDefinition, GenerateRequest, JobRecord


def test_job_record_tolerates_unknown_fields_from_newer_workers():
    request = GenerateRequest(user_query="q", field_definitions=[FieldDefinition(name="a")])
    job = JobRecord(task_id="t", client_id="c", request=request, created_at=time.time(), updated_at=time.time())
    raw = msgspec.json.encode(job)[:-1] + b',"added_later":1}'
    assert msgspec.json.decode(raw, type=JobRecord) == job
