"""Entity tags: cheap polling with ``If-None-Match`` (304 Not Modified, no body)."""

from __future__ import annotations

from fastapi import Request, Response

from service.published import Prepared

REVALIDATE = "no-cache"
"""Cache-Control of every tagged answer: clients may keep a copy but must ask (If-None-Match)
before using it."""


def make_etag(kind: str, version: int, digest: str) -> str:
    """A strong ETag naming the kind, version and content (``"policy-3-1a2b..."``): a folder
    republished from scratch with the same version number but other content gets a new tag."""
    return f'"{kind}-{version}-{digest[:16]}"'


def matches(request: Request, etag: str) -> bool:
    """Does the request's If-None-Match name ``etag`` (weak comparison, lists and ``*``)?"""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag.removeprefix("W/") in {tag.removeprefix("W/") for tag in tags}


def not_modified(etag: str, cache_control: str = REVALIDATE) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})


def base_key(request: Request) -> tuple[str, bytes, str]:
    """What the absolute links in a body depend on (scheme, Host, root path), read straight from
    the ASGI scope: ``str(request.base_url)`` costs more than the rest of a prepared answer."""
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), b"")
    return scope["scheme"], host, scope.get("root_path", "")


def answer(request: Request, prepared: Prepared, headers: dict[str, str] | None = None) -> Response:
    """The prepared bytes as they are (no model building, no validation), or 304 when the
    request's If-None-Match names their tag."""
    if matches(request, prepared.etag):
        return not_modified(prepared.etag)
    return Response(prepared.body, media_type=prepared.media_type,
                    headers={"ETag": prepared.etag, "Cache-Control": REVALIDATE, **(headers or {})})
