"""Entity tags: cheap polling with ``If-None-Match`` (304 Not Modified, no body)."""

from __future__ import annotations

from fastapi import Request, Response


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


def not_modified(etag: str, cache_control: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})
