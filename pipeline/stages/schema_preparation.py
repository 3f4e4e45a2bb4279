"""Stage 1: field definitions → prepared schema (row type roles and JSON Schema)."""

from __future__ import annotations

from contracts import GenerateRequest, PreparedSchema
from contracts.progress import SchemaPrepared, stage_end
from pipeline.schema import prepare_schema
from pipeline.stages.context import StageContext


def run(request: GenerateRequest) -> PreparedSchema:
    """The prepared schema of a request (checked when it was submitted)."""
    return prepare_schema(request.model_name, request.field_definitions)


def process(ctx: StageContext, task_id: str) -> None:
    """Prepare the schema, store it, hand off to search."""
    schema = run(ctx.job(task_id).request)
    names = ", ".join(f.name for f in schema.fields)
    ctx.hand_off(
        task_id,
        "search",
        progress=stage_end("schema_preparation"),
        message=f"Schema {schema.model_name} prepared ({names})",
        outputs={"schema": schema},
        data=SchemaPrepared(fields=len(schema.fields), key_field=schema.key_field),
    )
