"""Errors for people: every error answer is ``{"detail": "<one line>"}`` with a fitting status.

- 4xx: the request is wrong (the line names the file, field or version);
- 503: nothing published yet (the line says what to run) or the published folder is broken
  (a pointer to a lost version, a policy.json that is not a policy, a meta.json missing a field).
Validation errors, which FastAPI reports as a list, are folded into their first line.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipeline.artifacts import ArtifactError, UnknownVersionError
from pipeline.augment import PolicyError
from service.published import BrokenPublishError, NotPublishedError
from service.schemas import ErrorOut


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorOut(detail=one_line(detail)).model_dump(), status_code=status, headers=headers)


def one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "error"


_WHERE = {"query": "query parameter", "path": "path parameter", "body": "form field", "header": "header"}


def describe_validation_error(error: dict[str, Any]) -> str:
    """``{"loc": ("query", "top_k"), "msg": "..."}`` -> "query parameter 'top_k': ..."."""
    loc = [str(part) for part in error.get("loc", ())]
    where = _WHERE.get(loc[0], loc[0]) if loc else "request"
    name = ".".join(loc[1:])
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "missing":
        return f"missing {where} '{name}'" if name else f"missing {where}"
    return f"{where} '{name}': {message}" if name else f"{where}: {message}"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = describe_validation_error(errors[0]) if errors else "invalid request"
    return error_response(422, detail)


async def _not_published(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc), {"Retry-After": "60"})


async def _broken(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc))


async def _artifact(request: Request, exc: Exception) -> JSONResponse:
    # a published version that cannot be read as the contract says: the server's data, not the request
    return error_response(503, f"published folder: {exc}")


async def _unknown_version(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc))


async def _bad_policy(request: Request, exc: Exception) -> JSONResponse:
    return error_response(422, f"policy: {exc}" if not str(exc).startswith("policy") else str(exc))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(NotPublishedError, _not_published)
    app.add_exception_handler(BrokenPublishError, _broken)
    app.add_exception_handler(ArtifactError, _artifact)  # UnknownVersionError, a subclass, keeps 404
    app.add_exception_handler(UnknownVersionError, _unknown_version)
    app.add_exception_handler(PolicyError, _bad_policy)
