"""Adapter for the OpenAI chat-completions API and the providers that copy it.

OpenAI, OpenRouter, Groq and Ollama speak the same protocol; they differ in base URL,
whether a key is needed, and the name of the max-tokens field.
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
    bad_response,
    dig,
    parse_json_object,
    token_count,
)


class OpenAICompatibleAdapter(ProviderAdapter):
    def __init__(
        self,
        name: str,
        display_name: str,
        default_base_url: str,
        *,
        requires_key: bool = True,
        max_tokens_field: str = "max_tokens",
    ) -> None:
        self.name = name
        self.display_name = display_name
        self.default_base_url = default_base_url
        self.requires_key = requires_key
        self.max_tokens_field = max_tokens_field

    def build_call(
        self, request: CompletionRequest, *, base_url: str, api_key: str, stream: bool
    ) -> ProviderCall:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            self.max_tokens_field: self.max_tokens_for(request),
            "stream": stream,
        }
        if stream:
            # Without this the stream carries no usage and the call could not be counted.
            body["stream_options"] = {"include_usage": True}
        return ProviderCall(f"{base_url}/chat/completions", headers, body)

    def parse_completion(self, data: dict[str, Any], request: CompletionRequest) -> Completion:
        choice = dig(data, "choices", 0, kind=dict)
        message = dig(choice, "message", kind=dict)
        # content is null when the model refuses or only calls tools: an empty answer.
        text = message.get("content")
        if text is not None and not isinstance(text, str):
            raise bad_response("The provider's answer text is not a string.")
        text = text or ""
        return self.completion(
            request, data, text=text, usage=_usage(data),
            model=data.get("model"), stop_reason=choice.get("finish_reason"),
        )  # fmt: skip

    async def parse_stream(
        self, events: AsyncIterator[SseEvent], request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        parts: list[str] = []
        usage: Usage | None = None
        stop_reason: str | None = None
        async for event in events:
            if event.data.strip() == "[DONE]":
                yield StreamEvent(
                    usage=usage or self.estimated_usage(request, "".join(parts)),
                    stop_reason=stop_reason,
                )
                return
            chunk = parse_json_object(event.data)
            if "error" in chunk:
                # OpenRouter reports failures after the stream started as an error chunk.
                raise ProviderError(
                    f"{self.display_name} failed while answering: {self.error_message(chunk)}",
                    details={"provider_message": self.error_message(chunk)},
                )
            usage = _usage(chunk) or usage
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text = delta.get("content")
                if isinstance(text, str) and text:
                    parts.append(text)
                    yield StreamEvent(text=text)
                stop_reason = choice.get("finish_reason") or stop_reason


def _usage(data: dict[str, Any]) -> Usage | None:
    # Groq has also reported streamed usage under x_groq.usage.
    raw = data.get("usage") or (data.get("x_groq") or {}).get("usage")
    if not isinstance(raw, dict):
        return None
    prompt = token_count(raw.get("prompt_tokens"))
    completion = token_count(raw.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    return Usage.of(prompt, completion, token_count(raw.get("total_tokens")))


OPENAI = OpenAICompatibleAdapter(
    "openai",
    "OpenAI",
    "https://api.openai.com/v1",
    # max_tokens is deprecated at OpenAI and refused by its reasoning models.
    max_tokens_field="max_completion_tokens",
)
OPENROUTER = OpenAICompatibleAdapter("openrouter", "OpenRouter", "https://openrouter.ai/api/v1")
GROQ = OpenAICompatibleAdapter("groq", "Groq", "https://api.groq.com/openai/v1")
OLLAMA = OpenAICompatibleAdapter(
    "ollama", "Ollama", "http://localhost:11434/v1", requires_key=False
)
