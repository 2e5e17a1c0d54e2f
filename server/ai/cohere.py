"""Adapter for Cohere's Chat API v2.

The body is close to OpenAI's, but the answer text sits in message.content blocks, usage
comes as `tokens` (or only `billed_units`), and streams use typed events.
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


class CohereAdapter(ProviderAdapter):
    name = "cohere"
    display_name = "Cohere"
    default_base_url = "https://api.cohere.com"

    def build_call(
        self, request: CompletionRequest, *, base_url: str, api_key: str, stream: bool
    ) -> ProviderCall:
        body = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": self.max_tokens_for(request),
            "stream": stream,
        }
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        return ProviderCall(f"{base_url}/v2/chat", headers, body)

    def parse_completion(self, data: dict[str, Any], request: CompletionRequest) -> Completion:
        blocks = dig(data, "message", "content", kind=list)
        text = "".join(
            block["text"]
            for block in blocks
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
        return self.completion(
            request, data, text=text, usage=_usage(data.get("usage")),
            model=data.get("model"), stop_reason=data.get("finish_reason"),
        )  # fmt: skip

    async def parse_stream(
        self, events: AsyncIterator[SseEvent], request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        parts: list[str] = []
        async for event in events:
            data = parse_json_object(event.data)
            kind = data.get("type", event.event)
            if kind == "content-delta":
                text = dig(data, "delta", "message", "content", kind=dict).get("text")
                if isinstance(text, str) and text:
                    parts.append(text)
                    yield StreamEvent(text=text)
            elif kind == "message-end":
                delta = data.get("delta") or {}
                usage = _usage(delta.get("usage")) or self.estimated_usage(request, "".join(parts))
                yield StreamEvent(usage=usage, stop_reason=delta.get("finish_reason"))
                return
            elif kind == "error":
                message = self.error_message(data)
                raise ProviderError(
                    f"Cohere failed while answering: {message}",
                    details={"provider_message": message},
                )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    # `tokens` counts what the model actually processed; `billed_units` may be all there is.
    for section in ("tokens", "billed_units"):
        counts = raw.get(section)
        if isinstance(counts, dict):
            prompt = token_count(counts.get("input_tokens"))
            completion = token_count(counts.get("output_tokens"))
            if prompt is not None and completion is not None:
                return Usage.of(prompt, completion)
    return None


COHERE = CohereAdapter()
