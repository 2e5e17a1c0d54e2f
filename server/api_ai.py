"""AI provider connections and the metered completion proxy.

Keys go in and never come out (answers carry `key_hint`). A completion reserves its
estimated tokens before the provider is called and settles them afterwards, whatever
happens: success, provider failure, or the client leaving in the middle of a stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
)
from pydantic.json_schema import SkipJsonSchema

from server.ai import PROVIDERS, ChatMessage, CompletionRequest, ProviderError, adapter_for
from server.ai.base import ProviderAdapter, StreamEvent, check_base_url
from server.endpoints import Call, Endpoint
from server.models import Strict, not_null
from server.state import HTTP, SECRETS
from storage import ai_providers
from storage.ai_providers import Lease, NewProvider
from storage.errors import Invalid

ProviderName = Literal[PROVIDERS]  # type: ignore[valid-type]
# Printable ASCII without spaces: every provider's keys look so, and anything else would
# end up in an HTTP header.
ApiKey = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096,
                           pattern=r"^[\x21-\x7e]+$"),
]  # fmt: skip
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# JSON numbers and booleans are taken as they are: `false` is not 0, "5" is not 5.
TokenLimit = Annotated[StrictInt, Field(ge=0, le=2**53)]


class ProviderConfig(Strict):
    """Per-connection settings: where to send requests and how long to wait for them."""

    base_url: Annotated[str, Field(max_length=2000), AfterValidator(check_base_url)] | None = None
    timeout_seconds: Annotated[StrictFloat, Field(ge=1, le=600)] | None = None


class ProviderBody(Strict):
    provider: ProviderName
    api_key: ApiKey | None = Field(default=None, description="never returned; see key_hint")
    key_label: Label | None = None
    is_default: StrictBool = False
    usage_limit: TokenLimit | None = Field(default=None, description="tokens; null: no limit")
    supported_models: Annotated[list[ModelName], Field(max_length=200)] = []
    provider_config: ProviderConfig = ProviderConfig()


class ProviderPatch(Strict):
    # Left out: unchanged. Null clears key_label and usage_limit and is refused elsewhere.
    api_key: ApiKey | SkipJsonSchema[None] = not_null()
    key_label: Label | None = None
    is_default: StrictBool | SkipJsonSchema[None] = not_null()
    usage_limit: TokenLimit | None = None
    supported_models: Annotated[list[ModelName], Field(max_length=200)] | SkipJsonSchema[None] = (
        not_null()
    )
    provider_config: ProviderConfig | SkipJsonSchema[None] = not_null()
    reset_usage: StrictBool = Field(default=False, description="set current_usage back to 0")


class AiProvider(BaseModel):
    id: str
    provider: str
    key_label: str | None
    key_hint: str | None
    has_key: bool
    is_default: bool
    usage_limit: int | None
    current_usage: int
    reserved_usage: int
    usage_remaining: int | None
    supported_models: list[str]
    provider_config: dict[str, Any]
    last_used_at: str | None
    created_at: str
    updated_at: str


class AiProviderList(BaseModel):
    items: list[AiProvider]
    next_cursor: str | None = None


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class CompleteBody(Strict):
    provider_id: str | None = Field(default=None, description="default: your default connection")
    model: ModelName
    messages: Annotated[list[Message], Field(min_length=1, max_length=1000)]
    max_tokens: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    stream: StrictBool = Field(default=False, description="answer as text/event-stream")


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool


class CompletionAnswer(BaseModel):
    provider_id: str
    model: str
    text: str
    stop_reason: str | None
    usage: TokenUsage
    usage_remaining: int | None


async def create_provider(call: Call) -> dict:
    body: ProviderBody = call.body
    if body.api_key is None and adapter_for(body.provider).requires_key:
        raise Invalid(f"{body.provider} needs an api_key", code="api_key_required")
    new = NewProvider(
        provider=body.provider,
        api_key=body.api_key,
        key_label=body.key_label,
        is_default=body.is_default,
        usage_limit=body.usage_limit,
        supported_models=body.supported_models,
        provider_config=body.provider_config.model_dump(exclude_none=True),
    )
    box = call.request.app[SECRETS]
    return await call.db.write(ai_providers.create_provider, box, call.user_id, new)


async def list_providers(call: Call) -> dict:
    return {"items": await call.db.read(ai_providers.list_providers, call.user_id)}


async def update_provider(call: Call) -> dict:
    body: ProviderPatch = call.body
    changes = body.model_dump(exclude_unset=True)
    if body.provider_config is not None:
        changes["provider_config"] = body.provider_config.model_dump(exclude_none=True)
    for name in ("api_key", "is_default", "supported_models", "provider_config"):
        if name in changes and changes[name] is None:
            raise Invalid(f"{name} cannot be null", code="validation_failed")
    box = call.request.app[SECRETS]
    return await call.db.write(
        ai_providers.update_provider, box, call.user_id, call.params["id"], changes
    )


async def delete_provider(call: Call) -> None:
    await call.db.write(ai_providers.delete_provider, call.user_id, call.params["id"])


async def complete(call: Call) -> dict | web.StreamResponse:
    body: CompleteBody = call.body
    request = CompletionRequest(
        model=body.model,
        messages=[ChatMessage(m.role, m.content) for m in body.messages],
        max_tokens=body.max_tokens,
        stream=body.stream,
    )
    hold = call.settings.ai_reservation_seconds
    lease: Lease = await call.db.write(
        lambda conn: ai_providers.reserve_usage(
            conn, call.request.app[SECRETS], call.user_id, body.provider_id, body.model,
            _estimate(request), hold_seconds=hold,
        )
    )  # fmt: skip
    adapter = adapter_for(lease.provider)
    if body.stream:
        return await _relay_stream(call, lease, adapter, request)
    used = 0
    try:
        completion = await adapter.complete(
            call.request.app[HTTP],
            api_key=lease.api_key,
            base_url=lease.base_url,
            request=request,
            timeout=lease.timeout,
        )
        used = completion.usage.total_tokens
    finally:
        connection = await call.db.write(ai_providers.settle_usage, lease, used)
    return {
        "provider_id": lease.provider_id,
        "model": completion.model,
        "text": completion.text,
        "stop_reason": completion.stop_reason,
        "usage": asdict(completion.usage),
        "usage_remaining": _remaining(connection),
    }


def _estimate(request: CompletionRequest) -> Callable[[str], int]:
    return lambda provider: adapter_for(provider).estimate_tokens(request)


def _remaining(connection: dict | None) -> int | None:
    return connection["usage_remaining"] if connection else None


async def _relay_stream(
    call: Call, lease: Lease, adapter: ProviderAdapter, request: CompletionRequest
) -> web.StreamResponse:
    """Relay text deltas as SSE, then `done` with usage (or `error` if the provider fails).

    A failure before the first event is still an ordinary JSON error (502/504). Tokens
    are settled in `finally`: a client that leaves mid-stream is charged for the text
    produced so far, and its reservation is released.
    """
    events = adapter.stream(
        call.request.app[HTTP],
        api_key=lease.api_key,
        base_url=lease.base_url,
        request=request,
        timeout=lease.timeout,
    )
    received: list[str] = []
    final: StreamEvent | None = None
    failure: ProviderError | None = None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})  # fmt: skip
    try:
        first = await anext(events)
        await response.prepare(call.request)
        try:
            async for event in _starting_with(first, events):
                if event.is_final:
                    final = event
                else:
                    received.append(event.text)
                    await response.write(_sse("delta", {"text": event.text}))
        except ProviderError as exc:
            failure = exc
    except ConnectionResetError:
        return response  # the client left; the reservation is settled below
    finally:
        # Also runs when aiohttp cancels the handler because the client went away.
        if final is not None:
            used = final.usage.total_tokens
        else:
            used = adapter.estimated_usage(request, "".join(received)).total_tokens
            used = used if received else 0
        connection = await call.db.write(ai_providers.settle_usage, lease, used)
        await events.aclose()
    if failure is not None:
        ending = _sse("error", _error_body(failure))
    else:
        ending = _sse(
            "done",
            {
                "provider_id": lease.provider_id,
                "stop_reason": final.stop_reason,
                "usage": asdict(final.usage),
                "usage_remaining": _remaining(connection),
            },
        )
    try:
        await response.write(ending)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left just before the end; nothing more to tell it
    return response


async def _starting_with(
    first: StreamEvent, rest: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    yield first
    async for event in rest:
        yield event


def _sse(event: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def _error_body(error: ProviderError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message, "details": error.details}}


PROVIDER = "/api/v1/ai/providers/{id}"
ENDPOINTS = [
    Endpoint("POST", "/api/v1/ai/providers", create_provider,
             "Connect an AI provider; the key is sealed and only its key_hint is ever shown",
             "ai", body=ProviderBody, response=AiProvider, status=201, errors=(409, 422)),
    Endpoint("GET", "/api/v1/ai/providers", list_providers, "Your AI provider connections", "ai",
             response=AiProviderList),
    Endpoint("PATCH", PROVIDER, update_provider,
             "Change a connection: key, label, default, limit, models, config", "ai",
             body=ProviderPatch, response=AiProvider, errors=(404, 409, 422)),
    Endpoint("DELETE", PROVIDER, delete_provider, "Remove a connection and its key", "ai",
             status=204, errors=(404,)),
    Endpoint("POST", "/api/v1/ai/complete", complete,
             "A chat completion through one of your connections, usage counted. With"
             " stream: true the answer is text/event-stream: `delta` events {text}, then"
             " `done` {usage, usage_remaining} or `error` {error}",
             "ai", body=CompleteBody, response=CompletionAnswer,
             errors=(404, 422, 429, 502, 504),
             extra={"also_answers": {"text/event-stream": "with stream: true"},
                    "events": ("delta", "done", "error")}),
]  # fmt: skip
