"""AI provider adapters, one module per API family, and the registry that picks one.

Adding a provider is one adapter module plus one line in ADAPTERS.
"""

from __future__ import annotations

from server.ai.anthropic import ANTHROPIC
from server.ai.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    ProviderAdapter,
    ProviderError,
    ProviderTimeout,
    StreamEvent,
    Usage,
)
from server.ai.cohere import COHERE
from server.ai.gemini import GEMINI
from server.ai.openai_compatible import GROQ, OLLAMA, OPENAI, OPENROUTER
from storage.errors import Invalid

ADAPTERS: dict[str, ProviderAdapter] = {
    adapter.name: adapter
    for adapter in (OPENROUTER, OPENAI, ANTHROPIC, OLLAMA, GROQ, GEMINI, COHERE)
}
PROVIDERS: tuple[str, ...] = tuple(ADAPTERS)


def adapter_for(provider: str) -> ProviderAdapter:
    """The adapter for a provider name as stored in ai_provider.provider."""
    try:
        return ADAPTERS[provider]
    except KeyError:
        raise Invalid(
            f"Unknown AI provider {provider!r}.",
            code="unknown_provider",
            details={"provider": provider, "known": list(PROVIDERS)},
        ) from None


__all__ = [
    "ADAPTERS",
    "PROVIDERS",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ProviderAdapter",
    "ProviderError",
    "ProviderTimeout",
    "StreamEvent",
    "Usage",
    "adapter_for",
]
