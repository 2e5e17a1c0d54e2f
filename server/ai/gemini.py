"""Adapter for Google's Gemini API (generateContent / streamGenerateContent).

Assistant turns are called "model", system messages become `systemInstruction`, and an
invalid key is answered with HTTP 400 reason API_KEY_INVALID rather than 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from server.ai.base import (
    Completion,
    CompletionRequest,
    ProviderAdapter,
    ProviderCall,
    ProviderError,
    SseEvent,
    StreamEvent,
    Usage,
    dig,
    parse_json_object,
    token_count,
)


class GeminiAdapter(ProviderAdapter):
    name = "gemini"
    display_name = "Gemini"
    default_base_url = "https://generativelanguage.googleapis.com"

    def build_call(
        self, request: CompletionRequest, *, base_url: str, api_key: str, stream: bool
    ) -> ProviderCall:
        system = [{"text": m.content} for m in request.messages if m.role == "system"]
        body: dict[str, Any] = {
            "contents": [
                {
                    "role": "model" if m.role == "assistant" else "user",
                    "parts": [{"text": m.content}],
                }
                for m in request.messages
                if m.role != "system"
            ],
            "generationConfig": {"maxOutputTokens": self.max_tokens_for(request)},
        }
        if system:
            body["systemInstruction"] = {"parts": system}
        # Writers copy model names as Google lists them ("models/gemini-2.0-flash").
        model = quote(request.model.removeprefix("models/"), safe="-._~")
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        headers = {"Content-Type": "application/json", "x-goog-api-key": api_key}
        return ProviderCall(f"{base_url}/v1beta/models/{model}:{action}", headers, body)

    def error_code(self, status: int, data: dict[str, Any]) -> str:
        reasons = {
            detail.get("reason")
            for detail in (data.get("error") or {}).get("details") or []
            if isinstance(detail, dict)
        }
        if "API_KEY_INVALID" in reasons:
            return "provider_auth_failed"
        return super().error_code(status, data)

    def parse_completion(self, data: dict[str, Any], request: CompletionRequest) -> Completion:
        _raise_if_blocked(data)
        candidate = dig(data, "candidates", 0, kind=dict)
        text = _text(candidate)
        return self.completion(
            request, data, text=text, usage=_usage(data),
            model=data.get("modelVersion"), stop_reason=candidate.get("finishReason"),
        )  # fmt: skip

    async def parse_stream(
        self, events: AsyncIterator[SseEvent], request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        # No end marker: the last chunk carries finishReason and the complete usage,
        # then the connection closes.
        parts: list[str] = []
        usage: Usage | None = None
        stop_reason: str | None = None
        async for event in events:
            chunk = parse_json_object(event.data)
            if "error" in chunk:
                message = self.error_message(chunk)
                raise ProviderError(
                    f"Gemini failed while answering: {message}",
                    details={"provider_message": message},
                )
            usage = _usage(chunk) or usage
            if not chunk.get("candidates"):
                _raise_if_blocked(chunk)
                continue
            candidate = dig(chunk, "candidates", 0, kind=dict)
            text = _text(candidate)
            if text:
                parts.append(text)
                yield StreamEvent(text=text)
            stop_reason = candidate.get("finishReason") or stop_reason
        if stop_reason is not None:
            yield StreamEvent(
                usage=usage or self.estimated_usage(request, "".join(parts)),
                stop_reason=stop_reason,
            )


def _raise_if_blocked(data: dict[str, Any]) -> None:
    # A blocked prompt is a 200 answer with no candidates, only the reason.
    feedback = data.get("promptFeedback") or {}
    if not data.get("candidates") and feedback.get("blockReason"):
        raise ProviderError(
            f"Gemini refused the prompt ({feedback['blockReason']}).",
            details={"block_reason": feedback["blockReason"]},
        )


def _text(candidate: dict[str, Any]) -> str:
    # A candidate stopped for safety may have no content at all.
    parts = (candidate.get("content") or {}).get("parts") or []
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    )


def _usage(data: dict[str, Any]) -> Usage | None:
    raw = data.get("usageMetadata")
    if not isinstance(raw, dict):
        return None
    prompt = token_count(raw.get("promptTokenCount"))
    if prompt is None:
        return None
    # Thinking models bill their thoughts as output, outside candidatesTokenCount.
    completion = (token_count(raw.get("candidatesTokenCount")) or 0) + (
        token_count(raw.get("thoughtsTokenCount")) or 0
    )
    return Usage.of(prompt, completion, token_count(raw.get("totalTokenCount")))


GEMINI = GeminiAdapter()
