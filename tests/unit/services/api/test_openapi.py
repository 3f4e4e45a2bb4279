"""services/api/openapi.py: the OpenAPI document describes the bodies the API reads itself, and its errors."""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings
from services.api.app import create_app

#: an address nothing listens on: building the app connects to nothing
NOWHERE = "redis://127.0.0.1:9/0"


def _document(**settings: object) -> dict[str, Any]:
    app = create_app(Settings(redis_url=NOWHERE, **settings))  # type: ignore[arg-type]
    return app.openapi_schema.to_schema()


def test_generate_and_reprocess_document_their_bodies_and_error_answers() -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    for path, body, statuses in (
        ("/api/v1/datasets/generate", "GenerateRequest", {"202", "400", "401", "403", "413", "429"}),
        (
            "/api/v1/tasks/{task_id}/reprocess",
            "ReprocessRequest",
            {"202", "400", "401", "403", "404", "409", "413", "429"},
        ),
    ):
        operation = document["paths"][path]["post"]
        reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert reference == f"#/components/schemas/{body}"
        assert set(operation["responses"]) == statuses
        error = operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert set(schemas[error]["properties"]) == {"status_code", "detail", "field"}
    generate = schemas["GenerateRequest"]
    assert {"user_query", "field_definitions"} <= set(generate["required"])
    assert "documented_body" not in str(document)  # the documenting dependency is not a parameter


def test_api_keys_are_required_in_the_document_only_when_configured() -> None:
    schemes = {"bearer", "apiKey", "token"}
    assert set(_document()["components"]["securitySchemes"]) == schemes
    assert "security" not in _document()
    secured = _document(api_keys=("k1",))
    assert [next(iter(requirement)) for requirement in secured["security"]] == ["bearer", "apiKey", "token"]
