"""``HEAD`` wherever ``GET`` works: answered as the GET would be, without its body.

FastAPI routes declared with ``@router.get`` answer HEAD with 405. Rather than declare HEAD on
every route (and document it twice in the OpenAPI), HEAD requests run as GET and the body is
dropped here; status and headers, Content-Length and ETag included, are the GET's. Where there is
no GET (POST-only routes) the answer is the GET's 405, as it should be.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
