"""The HTTP API's error contract, shared by every router (moderation, review).

Every error is JSON ``{"error": "...", "details": [...]}`` (``details`` only where there are
several problems): 400 for a body that is not UTF-8 or not JSON, 413 past a size limit, 422 for
fields that fail validation, each problem named by its path (``items.3.text: ...``). Request
bodies are pydantic models in the route signatures; FastAPI's :class:`RequestValidationError`
reaches one handler (:func:`install_error_handlers`), and checks a model cannot express (limits
set per deployment) raise the same error through :func:`invalid`. :class:`BodyGuard` checks
each body's size and encoding while it streams in, before anything parses it.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiError", "BodyGuard", "ErrorBody", "bearer_token", "error_response",
           "error_responses", "install_error_handlers", "invalid", "problem_messages"]

_JSON = "application/json"

# Seconds a client waits after a 503 (a replica starting, a model loading): most such states
# pass within seconds.
RETRY_AFTER_503_S = 2


class ErrorBody(BaseModel):
    """The body of every error the API returns."""

    error: str = Field(..., description="What is wrong and how to fix it.")
    details: list[str] | None = Field(
        None, description="With several problems (422): one 'path: message' per problem.")


_RETRY_AFTER = {"Retry-After": {
    "description": "Seconds to wait before trying again (an integer).", "required": True,
    "schema": {"type": "integer", "minimum": 1}}}

# What each status means on this API; the OpenAPI document lists, per operation, those it
# can return (error_responses).
_MEANING = {
    400: "The body is not UTF-8 or not JSON.",
    401: "A missing key, or one that is not valid for this tenant or route.",
    403: "The reviewer's role, or the claim's owner, does not allow this.",
    404: "No such tenant policy, task or claim.",
    409: "The claim's lease was lost (expired or released).",
    413: "The body, or its items, are past a limit (limits.max_body_bytes, limits.max_items, "
         "the tenant's fair_use.burst_items).",
    422: "Fields that fail validation, each named by its path.",
    429: "The tenant is over its fair-use rate or in-flight limit (fair_use in its policy).",
    503: "No policy or model is loaded yet, or nothing can serve now: retry after a while.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for the error statuses it can return: the error body,
    and ``Retry-After`` for 429 and 503."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": _MEANING[status]}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


class ApiError(HTTPException):
    """An error the API returns as ``{"error": message, **extra}`` with ``status``.

    A Starlette ``HTTPException``, so that FastAPI passes one raised while it reads the body
    (by :class:`BodyGuard`) on to the handler instead of turning it into a generic 400.
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None,
                 *, retry_after_s: float | None = None, **extra: Any) -> None:
        """``retry_after_s`` (a 503 or 429) goes out as the ``Retry-After`` header."""
        headers = dict(headers or {})
        if retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        if status == 503:
            # a 503 is always temporary here (no policy or model yet, nothing can serve now)
            headers.setdefault("Retry-After", str(RETRY_AFTER_503_S))
        super().__init__(status, message, headers=headers or None)
        self.status, self.message, self.extra = status, message, extra


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def invalid(*problems: tuple[Sequence[str | int], str]) -> RequestValidationError:
    """A validation error for checks a model cannot express: ``(path, message)`` pairs, the
    path inside the body (``("items", 3, "text")``), as pydantic's would be."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", *path), "msg": msg}
                                   for path, msg in problems])


def problem_messages(errors: Sequence[Any]) -> list[str]:
    """``path: message`` for each validation error; the path leaves out FastAPI's ``body``."""
    out = []
    for e in errors:
        loc = list(e["loc"])
        if loc[:1] == ["body"] and len(loc) > 1:
            loc = loc[1:]
        msg = "unknown field; remove it" if e["type"] == "extra_forbidden" else e["msg"]
        out.append(f"{'.'.join(str(p) for p in loc)}: {msg}")
    return out


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers, **exc.extra)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for e in errors:
        if e["type"] == "json_invalid":
            # FastAPI keeps the parser's position and message; rebuild its line and column.
            doc = exc.body if isinstance(exc.body, str) else ""
            pos = e["loc"][1] if len(e["loc"]) > 1 and isinstance(e["loc"][1], int) else 0
            err = json.JSONDecodeError(e.get("ctx", {}).get("error", e["msg"]), doc, pos)
            return error_response(400, f"request body is not valid JSON: {err.msg} at line "
                                       f"{err.lineno} column {err.colno}")
    return error_response(422, "invalid request", details=problem_messages(errors))


def install_error_handlers(app: FastAPI) -> None:
    """The API's two handlers: :class:`ApiError` and FastAPI's validation error."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


def bearer_token(request: Request) -> str:
    """The key of ``Authorization: Bearer <key>``, or ``""``."""
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


class BodyGuard:
    """ASGI middleware: every request body, before anything parses it, is at most
    ``max_bytes`` (``setting`` names where that limit is set) and UTF-8, and is read as JSON.

    A declared ``Content-Length`` past the limit is refused before a byte is read; otherwise
    the bytes are counted and decoded as they arrive, and the first one past the limit or not
    UTF-8 stops the request. Every body of this API is JSON, so the content type is set to
    JSON for the router: clients such as ``curl -d`` send ``application/x-www-form-urlencoded``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, setting: str) -> None:
        self.app, self.max_bytes, self.setting = app, max_bytes, setting

    def _too_large(self, size: str) -> ApiError:
        return ApiError(413, f"request body is {size} bytes; the limit is {self.max_bytes} "
                             f"({self.setting})")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            err = self._too_large(declared)
            await error_response(err.status, err.message)(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", _JSON.encode())]}
        decoder = codecs.getincrementaldecoder("utf-8")()
        seen = 0

        async def guarded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                offset = seen - len(decoder.getstate()[0])  # bytes held from the last chunk
                seen += len(chunk)
                if seen > self.max_bytes:
                    raise self._too_large(f"more than {self.max_bytes}")
                try:
                    decoder.decode(chunk, final=not message.get("more_body", False))
                except UnicodeDecodeError as err:
                    raise ApiError(400, f"request body is not valid UTF-8 (byte "
                                        f"{offset + err.start}: {err.reason}); encode the JSON "
                                        "as UTF-8") from None
            return message

        await self.app(scope, guarded, send)
