"""Stage 1: field definitions → prepared schema (row type roles and JSON Schema)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts import GenerateRequest, PreparedSchema
from pipeline.errors import PermanentError
from pipeline.schema import InvalidRequest, prepare_schema

if TYPE_CHECKING:
    from pipeline.runtime import Pipeline


def run(request: GenerateRequest) -> PreparedSchema:
    """The prepared schema of a request."""
    try:
        return prepare_schema(request.model_name, request.field_definitions)
    except InvalidRequest as exc:  # the API validates first; a stored request that fails is not retryable
        raise PermanentError(str(exc)) from exc


def process(pipeline: Pipeline, task_id: str) -> None:
    """Actor body: prepare the schema, store it, hand off to search."""
    schema = run(pipeline.job(task_id).request)
    names = ", ".join(f.name for f in schema.fields)
    pipeline.hand_off(
        task_id,
        "search",
        progress=10,
        message=f"Schema {schema.model_name} prepared ({names})",
        outputs={"schema": schema},
        data={"fields": len(schema.fields), "key_field": schema.key_field},
    )
