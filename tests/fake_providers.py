"""A fake AI provider on loopback that speaks the OpenAI, Anthropic, Gemini and Cohere APIs.

It checks keys and request shapes like the real services, answers with usage figures,
streams SSE, and can be switched into failure modes. Reused by the route tests:

    fake = await start_fake_provider()
    base_url = fake.base_url("anthropic")
    fake.mode = "rate_limited"
    ...
    await fake.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

VALID_KEY = "sk-fake-3f9a1c0b7d2e4a6f8b1c"
DEFAULT_REPLY = "The lighthouse keeper counted the waves until dawn."
ANTHROPIC_VERSION = "2023-06-01"

# ok: normal answers. The others fail on purpose, whatever the key:
# unauthorized (401, or Gemini's 400 API_KEY_INVALID), rate_limited (429 + Retry-After),
# server_error (500), malformed (200 that is not JSON), missing_fields (200 JSON without
# the answer), slow (no answer for `delay` seconds), stall_stream (one chunk, then
# silence), truncated_stream (one chunk, then the connection ends without the last event),
# no_usage (a normal non-streamed answer without its usage figures).
MODES = (
    "ok",
    "no_usage",
    "unauthorized",
    "rate_limited",
    "server_error",
    "malformed",
    "missing_fields",
    "slow",
    "stall_stream",
    "truncated_stream",
)

# Which API family serves each provider name, and the base URL path it expects.
_BASE_PATHS = {
    "openai": "/v1",
    "openrouter": "/v1",
    "groq": "/v1",
    "ollama": "/v1",
    "anthropic": "",
    "gemini": "",
    "cohere": "",
}


@dataclass
class RecordedRequest:
    api: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any


class BadRequest(Exception):
    """The request is not what the real API would accept: answered with a 400."""


@dataclass
class FakeProvider:
    url: str = ""
    mode: str = "ok"
    reply_text: str = DEFAULT_REPLY
    delay: float = 5.0
    # Accept requests that carry no key at all, like a local Ollama.
    keyless: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def base_url(self, provider: str) -> str:
        """The base URL to configure for `provider` so its adapter talks to this fake."""
        return self.url + _BASE_PATHS[provider]

    async def close(self) -> None:
        """Stop serving; wakes any deliberately slow handler. Safe to call twice."""
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def pause(self) -> None:
        """Wait `delay` seconds, or less if the fake is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.delay)


async def start_fake_provider(mode: str = "ok") -> FakeProvider:
    """Serve the fake on 127.0.0.1 on a free port."""
    fake = FakeProvider(mode=mode)
    app = web.Application()
    for api, (method, path) in _ROUTES.items():
        app.router.add_route(method, path, _handler(fake, _APIS[api]))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    fake._runner = runner
    return fake


def words(text: str) -> int:
    """The fake's token count: one token per word, so tests can predict usage."""
    return len(text.split())


@dataclass(frozen=True)
class Api:
    """How one API family authenticates, validates, answers and fails."""

    name: str
    key: Callable[[web.Request], str]
    validate: Callable[[web.Request, dict[str, Any]], list[str]]
    error: Callable[[int, str], dict[str, Any]]
    answer: Callable[[dict[str, Any], str, int, int], dict[str, Any]]
    # (event name or None, JSON-able payload or a literal string) in order.
    stream: Callable[[dict[str, Any], list[str], int, int], list[tuple[str | None, Any]]]
    missing: dict[str, Any]
    newline: str = "\n"
    auth_status: int = 401


def _handler(fake: FakeProvider, api: Api) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        fake.requests.append(
            RecordedRequest(
                api.name, request.path, dict(request.query), CIMultiDict(request.headers), body
            )
        )
        if not isinstance(body, dict):
            return _json(400, api.error(400, "Request body is not a JSON object."))
        key = api.key(request)
        if fake.mode == "unauthorized" or key != VALID_KEY and not (fake.keyless and not key):
            # Echo the key back, as some providers do, to prove the adapters scrub it.
            return _json(api.auth_status, api.error(api.auth_status, f"Invalid API key: {key}"))
        problems = api.validate(request, body)
        if problems:
            return _json(400, api.error(400, "; ".join(problems)))
        if fake.mode == "rate_limited":
            return _json(
                429, api.error(429, "Rate limit reached, slow down."), {"Retry-After": "7"}
            )
        if fake.mode == "server_error":
            return _json(500, api.error(500, "The server had an error processing your request."))
        if fake.mode == "slow":
            await fake.pause()
        prompt, completion = _prompt_words(api.name, body), words(fake.reply_text)
        streaming = _is_stream(api.name, request, body)
        if fake.mode == "malformed":
            if streaming:
                return await _sse(request, api, [(None, "{not json")], fake)
            return web.Response(
                text="<html>upstream hiccup</html>", content_type="application/json"
            )
        if fake.mode == "missing_fields" and not streaming:
            return _json(200, api.missing)
        if not streaming:
            answer = api.answer(body, fake.reply_text, prompt, completion)
            if fake.mode == "no_usage":
                answer = {k: v for k, v in answer.items() if k not in ("usage", "usageMetadata")}
            return _json(200, answer)
        pieces = [word + " " for word in fake.reply_text.split(" ")]
        pieces[-1] = pieces[-1].rstrip(" ")
        return await _sse(request, api, api.stream(body, pieces, prompt, completion), fake)

    return handle


async def _sse(
    request: web.Request, api: Api, events: list[tuple[str | None, Any]], fake: FakeProvider
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    nl = api.newline
    try:
        for index, (name, payload) in enumerate(events):
            data = payload if isinstance(payload, str) else json.dumps(payload)
            head = f"event: {name}{nl}" if name else ""
            await response.write(f"{head}data: {data}{nl}{nl}".encode())
            if index == 1 and fake.mode == "stall_stream":
                await fake.pause()
            if index == 1 and fake.mode == "truncated_stream":
                break
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client gave up (a timeout test); nothing left to say
    return response


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
    return web.json_response(payload, status=status, headers=headers)


def _is_stream(api: str, request: web.Request, body: dict[str, Any]) -> bool:
    if api == "gemini":
        return request.match_info["target"].endswith(":streamGenerateContent")
    return body.get("stream") is True


def _prompt_words(api: str, body: dict[str, Any]) -> int:
    if api == "gemini":
        texts = [p["text"] for c in body["contents"] for p in c["parts"]]
        texts += [p["text"] for p in (body.get("systemInstruction") or {}).get("parts", [])]
    else:
        texts = [m["content"] for m in body["messages"]]
        if api == "anthropic":
            texts.append(body.get("system") or "")
    return sum(words(t) for t in texts)


def _check_messages(body: dict[str, Any], roles: tuple[str, ...]) -> list[str]:
    problems = []
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model: field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "messages: at least one message is required"]
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in roles:
            problems.append(f"messages.{i}.role: must be one of {', '.join(roles)}")
        elif not isinstance(message.get("content"), str):
            problems.append(f"messages.{i}.content: must be a string")
    return problems


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# OpenAI chat completions (also OpenRouter, Groq, Ollama).


def _openai_key(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


def _openai_validate(request: web.Request, body: dict[str, Any]) -> list[str]:
    problems = _check_messages(body, ("system", "user", "assistant"))
    limits = [body[f] for f in ("max_tokens", "max_completion_tokens") if f in body]
    if len(limits) > 1 or not all(_positive_int(v) for v in limits):
        problems.append("max_tokens / max_completion_tokens: one positive integer")
    if "stream_options" in body and body.get("stream") is not True:
        problems.append("stream_options: only allowed when stream is true")
    return problems


def _openai_usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _openai_answer(body: dict[str, Any], text: str, prompt: int, completion: int):
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"] + "-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_usage(prompt, completion),
    }


def _openai_stream(body: dict[str, Any], pieces: list[str], prompt: int, completion: int):
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": piece})) for piece in pieces]
    events.append((None, chunk({}, "stop")))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage_chunk = {**chunk({}), "choices": [], "usage": _openai_usage(prompt, completion)}
        events.append((None, usage_chunk))
    events.append((None, "[DONE]"))
    return events


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {401: "invalid_request_error", 429: "requests", 500: "server_error"}
    return {"error": {"message": message, "type": kind.get(status, "invalid_request_error")}}


# Anthropic Messages.


def _anthropic_validate(request: web.Request, body: dict[str, Any]) -> list[str]:
    problems = _check_messages(body, ("user", "assistant"))
    if request.headers.get("anthropic-version") != ANTHROPIC_VERSION:
        problems.append("anthropic-version: header is required")
    if not _positive_int(body.get("max_tokens")):
        problems.append("max_tokens: field required")
    if "system" in body and not isinstance(body["system"], str | list):
        problems.append("system: must be a string or a list of blocks")
    return problems


def _anthropic_usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _anthropic_answer(body: dict[str, Any], text: str, prompt: int, completion: int):
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(prompt, completion),
    }


def _anthropic_stream(body: dict[str, Any], pieces: list[str], prompt: int, completion: int):
    start = _anthropic_answer(body, "", prompt, 1)
    start.update(content=[], stop_reason=None)
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        ),
        ("ping", {"type": "ping"}),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in pieces
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": completion},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


def _anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = {401: "authentication_error", 429: "rate_limit_error", 500: "api_error"}
    return {
        "type": "error",
        "error": {"type": kind.get(status, "invalid_request_error"), "message": message},
    }


# Gemini generateContent.


def _gemini_validate(request: web.Request, body: dict[str, Any]) -> list[str]:
    problems = []
    target = request.match_info["target"]
    model, _, action = target.partition(":")
    if not model or action not in ("generateContent", "streamGenerateContent"):
        problems.append(f"unknown method {target}")
    if action == "streamGenerateContent" and request.query.get("alt") != "sse":
        problems.append("streaming is only emulated with alt=sse")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return [*problems, "contents: at least one is required"]
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            problems.append(f"contents[{i}].role: must be user or model")
        elif not all(isinstance(p.get("text"), str) for p in content.get("parts") or [{}]):
            problems.append(f"contents[{i}].parts: each needs text")
    config = body.get("generationConfig") or {}
    if "maxOutputTokens" in config and not _positive_int(config["maxOutputTokens"]):
        problems.append("generationConfig.maxOutputTokens: must be a positive integer")
    return problems


def _gemini_usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    }


def _gemini_chunk(text: str, finish: str | None, usage: dict[str, int]) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.0-flash-001",
    }


def _gemini_answer(body: dict[str, Any], text: str, prompt: int, completion: int):
    return _gemini_chunk(text, "STOP", _gemini_usage(prompt, completion))


def _gemini_stream(body: dict[str, Any], pieces: list[str], prompt: int, completion: int):
    # Every chunk carries the usage so far; the last one carries finishReason and the totals.
    events: list[tuple[str | None, Any]] = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        usage = _gemini_usage(prompt, completion if last else index + 1)
        events.append((None, _gemini_chunk(piece, "STOP" if last else None, usage)))
    return events


def _gemini_error(status: int, message: str) -> dict[str, Any]:
    statuses = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}
    error: dict[str, Any] = {"code": status, "message": message, "status": statuses.get(status)}
    if message.startswith("Invalid API key"):
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ]
    return {"error": error}


# Cohere Chat v2.


def _cohere_validate(request: web.Request, body: dict[str, Any]) -> list[str]:
    problems = _check_messages(body, ("system", "user", "assistant", "tool"))
    if "max_tokens" in body and not _positive_int(body["max_tokens"]):
        problems.append("max_tokens: must be a positive integer")
    return problems


def _cohere_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "billed_units": {"input_tokens": prompt, "output_tokens": completion},
        "tokens": {"input_tokens": prompt + 2, "output_tokens": completion},
    }


def _cohere_answer(body: dict[str, Any], text: str, prompt: int, completion: int):
    return {
        "id": "fake-cohere",
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "usage": _cohere_usage(prompt, completion),
    }


def _cohere_stream(body: dict[str, Any], pieces: list[str], prompt: int, completion: int):
    message = {"role": "assistant", "content": []}
    events: list[tuple[str | None, Any]] = [
        ("message-start", {"type": "message-start", "id": "fake", "delta": {"message": message}}),
        (
            "content-start",
            {
                "type": "content-start",
                "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}},
            },
        ),
    ]
    events += [
        (
            "content-delta",
            {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}},
        )
        for p in pieces
    ]
    events += [
        ("content-end", {"type": "content-end", "index": 0}),
        (
            "message-end",
            {
                "type": "message-end",
                "delta": {"finish_reason": "COMPLETE", "usage": _cohere_usage(prompt, completion)},
            },
        ),
    ]
    return events


def _cohere_error(status: int, message: str) -> dict[str, Any]:
    return {"id": "fake-error", "message": message}


_APIS = {
    "openai": Api(
        "openai",
        _openai_key,
        _openai_validate,
        _openai_error,
        _openai_answer,
        _openai_stream,
        missing={"id": "chatcmpl-fake", "object": "chat.completion", "choices": []},
    ),
    "anthropic": Api(
        "anthropic",
        lambda request: request.headers.get("x-api-key", ""),
        _anthropic_validate,
        _anthropic_error,
        _anthropic_answer,
        _anthropic_stream,
        missing={"id": "msg_fake", "type": "message", "role": "assistant"},
    ),
    "gemini": Api(
        "gemini",
        lambda request: request.headers.get("x-goog-api-key", request.query.get("key", "")),
        _gemini_validate,
        _gemini_error,
        _gemini_answer,
        _gemini_stream,
        missing={"modelVersion": "gemini-2.0-flash-001"},
        newline="\r\n",
        auth_status=400,
    ),
    "cohere": Api(
        "cohere",
        _openai_key,
        _cohere_validate,
        _cohere_error,
        _cohere_answer,
        _cohere_stream,
        missing={"id": "fake-cohere", "finish_reason": "COMPLETE"},
    ),
}
_ROUTES = {
    "openai": ("POST", "/v1/chat/completions"),
    "anthropic": ("POST", "/v1/messages"),
    "gemini": ("POST", "/v1beta/models/{target}"),
    "cohere": ("POST", "/v2/chat"),
}
