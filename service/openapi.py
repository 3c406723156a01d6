"""The OpenAPI document as the service really behaves, where FastAPI's generated one falls short.

FastAPI documents what it can see in the signatures; these are the rest, checked by
tests/service/test_schema_fuzz.py (schemathesis against this document):

- every 422 is ``ErrorOut`` (``{"detail": "<one line>"}``, service/errors.py), not FastAPI's
  list-of-errors ``HTTPValidationError``;
- the ``policy`` form field of /augment is a policy document (``PolicyIn``, JSON), not any string;
- /predict takes 1 to ``max_files`` files (a setting, so known only when the app is built);
- links (OpenAPI ``links``) from the answers that name policy versions to the operations that
  take one, so a client (and schemathesis's stateful run) can follow them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.schemas import ErrorOut, PolicyIn
from service.settings import Settings

_REF = "#/components/schemas/{model}"


def finish_openapi(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            _add_model(components, PolicyIn)
            _add_model(components, ErrorOut)
            _errors_are_one_line(schema)
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            _policy_field_is_a_document(components)
            _predict_file_count(components, settings.max_files)
            _links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_model(components: dict[str, Any], model: type[Any]) -> None:
    model_schema = model.model_json_schema(ref_template=_REF)
    components.update(model_schema.pop("$defs", {}))
    components[model.__name__] = model_schema


def _errors_are_one_line(schema: dict[str, Any]) -> None:
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            response = operation.get("responses", {}).get("422")
            if response is not None:
                response["content"] = {"application/json": {"schema": {"$ref": _REF.format(model="ErrorOut")}}}
                if response.get("description") == "Validation Error":
                    response["description"] = "a missing or malformed parameter (the line names it)"


def _policy_field_is_a_document(components: dict[str, Any]) -> None:
    body = components.get("Body_augment_augment_post", {}).get("properties", {})
    if "policy" in body:
        description = body["policy"].get("description", "")
        body["policy"] = {
            "anyOf": [{"$ref": _REF.format(model="PolicyIn")}, {"type": "null"}],
            "description": f"{description}: a policy document (the format of policy.json)",
        }


def _predict_file_count(components: dict[str, Any], max_files: int) -> None:
    files = components.get("Body_predict_predict_post", {}).get("properties", {}).get("files")
    if files is not None:
        files.update(minItems=1, maxItems=max_files)


_VERSION_SOURCES = {
    ("get", "/policy"): "$response.body#/version",
    ("get", "/policies/{version}"): "$response.body#/version",
    ("get", "/policies"): "$response.body#/policies/0/version",
}
_VERSION_TARGETS = {"OnePolicy": ("get", "/policies/{version}"), "PolicyGrid": ("get", "/policies/{version}/grid.png")}


def _links(schema: dict[str, Any]) -> None:
    """Links from the answers that hold a policy version to the operations that take one."""
    paths = schema.get("paths", {})
    ids = {(method, path): operation["operationId"] for path, item in paths.items()
           for method, operation in item.items()}
    for (method, path), version in _VERSION_SOURCES.items():
        ok = paths.get(path, {}).get(method, {}).get("responses", {}).get("200")
        if ok is not None:
            ok["links"] = {name: {"operationId": ids[target], "parameters": {"version": version}}
                           for name, target in _VERSION_TARGETS.items() if target in ids}
