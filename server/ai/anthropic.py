"""Adapter for Anthropic's Messages API (Claude).

System messages move to the top-level `system` field, `max_tokens` is always sent
(the API requires it), and streamed usage arrives split over message_start and message_delta.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

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

API_VERSION = "2023-06-01"


class AnthropicAdapter(ProviderAdapter):
    name = "anthropic"
    display_name = "Anthropic"
    default_base_url = "https://api.anthropic.com"

    def build_call(
        self, request: CompletionRequest, *, base_url: str, api_key: str, stream: bool
    ) -> ProviderCall:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": self.max_tokens_for(request),
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
            "stream": stream,
        }
        if system:
            body["system"] = system
        headers = {
            "Content-Type": "application/json",
            "x-api-key": api_key,
            "anthropic-version": API_VERSION,
        }
        return ProviderCall(f"{base_url}/v1/messages", headers, body)

    def parse_completion(self, data: dict[str, Any], request: CompletionRequest) -> Completion:
        blocks = dig(data, "content", kind=list)
        text = "".join(
            block["text"]
            for block in blocks
            if isinstance(block, dict) and block.get("type") == "text"
        )
        return self.completion(
            request, data, text=text, usage=_usage(data.get("usage") or {}),
            model=data.get("model"), stop_reason=data.get("stop_reason"),
        )  # fmt: skip

    async def parse_stream(
        self, events: AsyncIterator[SseEvent], request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        parts: list[str] = []
        counts: dict[str, Any] = {}
        stop_reason: str | None = None
        async for event in events:
            data = parse_json_object(event.data)
            kind = data.get("type", event.event)
            if kind == "message_start":
                counts.update(dig(data, "message", kind=dict).get("usage") or {})
            elif kind == "content_block_delta":
                delta = dig(data, "delta", kind=dict)
                if delta.get("type") == "text_delta" and delta.get("text"):
                    parts.append(delta["text"])
                    yield StreamEvent(text=delta["text"])
            elif kind == "message_delta":
                # output_tokens here is the running total, not an increment.
                counts.update(data.get("usage") or {})
                stop_reason = (data.get("delta") or {}).get("stop_reason") or stop_reason
            elif kind == "message_stop":
                usage = _usage(counts) or self.estimated_usage(request, "".join(parts))
                yield StreamEvent(usage=usage, stop_reason=stop_reason)
                return
            elif kind == "error":
                # e.g. overloaded_error after the stream has started.
                message = self.error_message(data)
                raise ProviderError(
                    f"Anthropic failed while answering: {message}",
                    details={"provider_message": message},
                )


def _usage(raw: dict[str, Any]) -> Usage | None:
    prompt = token_count(raw.get("input_tokens"))
    completion = token_count(raw.get("output_tokens"))
    if prompt is None or completion is None:
        return None
    # input_tokens leaves out prompt-cache reads and writes, which are still billed.
    for cached in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        prompt += token_count(raw.get(cached)) or 0
    return Usage.of(prompt, completion)


ANTHROPIC = AnthropicAdapter()
