"""A hard limit on request bodies, enforced while they stream in (before any parsing)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.3g} MiB"


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413: at once from Content-Length when it is sent,
    else (chunked uploads) as soon as the streamed bytes pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body is larger than the {_mib(self.max_bytes)} limit"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(413, too_large)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body parsing; FastAPI re-raises HTTPExceptions.
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited_receive, send)
