"""The AI provider adapters against a fake provider on loopback: answers, streams, failures."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from server.ai import ADAPTERS, PROVIDERS, adapter_for
from server.ai.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderTimeout,
    StreamEvent,
)
from storage.errors import Invalid
from tests.fake_providers import DEFAULT_REPLY, VALID_KEY, FakeProvider, start_fake_provider

SYSTEM = "You write crisp literary prose."
PROMPT = "Open chapter one by the sea."
PROMPT_WORDS = len(SYSTEM.split()) + len(PROMPT.split())
REPLY_WORDS = len(DEFAULT_REPLY.split())
WRONG_KEY = "sk-wrong-9d8c7b6a5f4e3d2c1b0a"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    fake = await start_fake_provider()
    yield fake
    await fake.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chapter_request(max_tokens: int | None = 200) -> CompletionRequest:
    return CompletionRequest(
        model="novel-model",
        messages=[ChatMessage("system", SYSTEM), ChatMessage("user", PROMPT)],
        max_tokens=max_tokens,
    )


async def complete(
    provider: str,
    fake: FakeProvider,
    session: aiohttp.ClientSession,
    *,
    key: str = VALID_KEY,
    timeout: float = 5,
    request: CompletionRequest | None = None,
) -> Completion:
    return await adapter_for(provider).complete(
        session,
        api_key=key,
        base_url=fake.base_url(provider),
        request=request or chapter_request(),
        timeout=timeout,
    )


async def stream(
    provider: str,
    fake: FakeProvider,
    session: aiohttp.ClientSession,
    *,
    key: str = VALID_KEY,
    timeout: float = 5,
    into: list[StreamEvent] | None = None,
) -> list[StreamEvent]:
    events = [] if into is None else into
    async for event in adapter_for(provider).stream(
        session,
        api_key=key,
        base_url=fake.base_url(provider),
        request=chapter_request(),
        timeout=timeout,
    ):
        events.append(event)
    return events


def expected_prompt_tokens(provider: str) -> int:
    # The fake's Cohere reports `tokens` two above `billed_units`; `tokens` wins.
    return PROMPT_WORDS + 2 if provider == "cohere" else PROMPT_WORDS


def assert_key_absent(error: ProviderError, key: str) -> None:
    visible = " ".join([str(error), repr(error), error.message, json.dumps(error.details)])
    assert key not in visible
    assert error.__cause__ is None


def test_registry_offers_every_provider_a_writer_can_choose() -> None:
    assert set(PROVIDERS) == {
        "openrouter",
        "openai",
        "anthropic",
        "ollama",
        "groq",
        "gemini",
        "cohere",
    }
    assert all(adapter.name == name for name, adapter in ADAPTERS.items())
    assert adapter_for("groq").default_base_url == "https://api.groq.com/openai/v1"
    assert adapter_for("ollama").default_base_url == "http://localhost:11434/v1"
    assert not adapter_for("ollama").requires_key
    with pytest.raises(Invalid) as caught:
        adapter_for("skynet")
    assert caught.value.code == "unknown_provider"


def test_a_request_with_an_unknown_role_or_no_messages_is_invalid() -> None:
    with pytest.raises(Invalid):
        CompletionRequest(model="m", messages=[ChatMessage("narrator", "Once")])
    with pytest.raises(Invalid):
        CompletionRequest(model="m", messages=[])
    with pytest.raises(Invalid):
        CompletionRequest(model="m", messages=[ChatMessage("user", "x")], max_tokens=0)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_completes_a_chapter_opening_with_its_usage(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    completion = await complete(provider, fake, session)

    assert completion.text == DEFAULT_REPLY
    assert completion.usage.prompt_tokens == expected_prompt_tokens(provider)
    assert completion.usage.completion_tokens == REPLY_WORDS
    assert completion.usage.total_tokens == expected_prompt_tokens(provider) + REPLY_WORDS
    assert not completion.usage.estimated
    assert completion.raw
    assert completion.stop_reason
    assert len(fake.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_streams_text_then_one_final_usage_event(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    events = await stream(provider, fake, session)

    *deltas, final = events
    assert len(deltas) > 1
    assert "".join(event.text for event in deltas) == DEFAULT_REPLY
    assert not any(event.is_final for event in deltas)
    assert final.is_final and final.text == ""
    assert final.usage is not None
    assert final.usage.prompt_tokens == expected_prompt_tokens(provider)
    assert final.usage.completion_tokens == REPLY_WORDS
    assert not final.usage.estimated


async def test_openai_gets_bearer_auth_max_completion_tokens_and_streamed_usage(
    fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    await stream("openai", fake, session)

    sent = fake.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {VALID_KEY}"
    assert sent.body["max_completion_tokens"] == 200
    assert "max_tokens" not in sent.body
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["messages"][0] == {"role": "system", "content": SYSTEM}


async def test_openrouter_and_groq_get_the_classic_max_tokens_field(
    fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    await complete("openrouter", fake, session)
    await complete("groq", fake, session)

    assert [r.body["max_tokens"] for r in fake.requests] == [200, 200]
    assert all(r.body["stream"] is False for r in fake.requests)


async def test_ollama_needs_no_key_and_sends_no_authorization_header(
    fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.keyless = True

    completion = await complete("ollama", fake, session, key="")

    assert completion.text == DEFAULT_REPLY
    assert "Authorization" not in fake.requests[0].headers


async def test_a_provider_that_needs_a_key_is_not_called_without_one(
    fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ProviderError) as caught:
        await complete("anthropic", fake, session, key="")

    assert caught.value.code == "provider_auth_failed"
    assert fake.requests == []


async def test_anthropic_gets_system_at_top_level_version_header_and_default_max_tokens(
    fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    await complete("anthropic", fake, session, request=chapter_request(max_tokens=None))

    sent = fake.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == VALID_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["system"] == SYSTEM
    assert sent.body["messages"] == [{"role": "user", "content": PROMPT}]
    assert sent.body["max_tokens"] == adapter_for("anthropic").default_max_tokens


async def test_gemini_gets_model_roles_system_instruction_and_sse_streaming(
    fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    request = CompletionRequest(
        model="models/gemini-2.0-flash",
        messages=[
            ChatMessage("system", SYSTEM),
            ChatMessage("user", PROMPT),
            ChatMessage("assistant", "The tide was out."),
            ChatMessage("user", "Go on."),
        ],
        max_tokens=300,
    )
    await complete("gemini", fake, session, request=request)
    async for _ in adapter_for("gemini").stream(
        session, api_key=VALID_KEY, base_url=fake.url, request=request, timeout=5
    ):
        pass

    plain, streamed = fake.requests
    assert plain.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert streamed.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert streamed.query == {"alt": "sse"}
    assert plain.headers["x-goog-api-key"] == VALID_KEY
    assert [c["role"] for c in plain.body["contents"]] == ["user", "model", "user"]
    assert plain.body["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
    assert plain.body["generationConfig"] == {"maxOutputTokens": 300}


async def test_cohere_gets_v2_chat_with_system_kept_in_messages(
    fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    await complete("cohere", fake, session)

    sent = fake.requests[0]
    assert sent.path == "/v2/chat"
    assert sent.headers["Authorization"] == f"Bearer {VALID_KEY}"
    assert [m["role"] for m in sent.body["messages"]] == ["system", "user"]
    assert sent.body["max_tokens"] == 200


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
async def test_an_answer_without_usage_is_still_counted_by_estimate(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "no_usage"

    completion = await complete(provider, fake, session)

    assert completion.text == DEFAULT_REPLY
    assert completion.usage.estimated
    assert completion.usage.prompt_tokens >= PROMPT_WORDS
    assert completion.usage.completion_tokens >= REPLY_WORDS


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_reserved_estimate_covers_what_the_call_really_used(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    request = chapter_request(max_tokens=50)
    fake.keyless = True

    completion = await complete(provider, fake, session, request=request)

    assert adapter_for(provider).estimate_tokens(request) >= completion.usage.total_tokens


def test_the_estimate_is_prompt_bytes_over_three_plus_max_tokens() -> None:
    adapter = adapter_for("openai")
    english = CompletionRequest("m", [ChatMessage("user", "a" * 300)], max_tokens=10)
    chinese = CompletionRequest("m", [ChatMessage("user", "海" * 300)], max_tokens=10)
    unbounded = CompletionRequest("m", [ChatMessage("user", "a" * 300)])

    assert adapter.estimate_tokens(english) == 100 + 4 + 10
    # One CJK character is about one token: characters / 3 would reserve a third of it.
    assert adapter.estimate_tokens(chinese) == 300 + 4 + 10
    assert adapter.estimate_tokens(unbounded) == 100 + 4 + adapter.default_max_tokens


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_wrong_key_is_reported_as_auth_failure_without_the_key(
    provider: str, streamed: bool, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ProviderError) as caught:
        if streamed:
            await stream(provider, fake, session, key=WRONG_KEY)
        else:
            await complete(provider, fake, session, key=WRONG_KEY)

    error = caught.value
    assert error.status == 502
    assert error.code == "provider_auth_failed"
    assert error.details["provider"] == provider
    # The fake echoes the key it received; what reaches us is the redacted message.
    assert "Invalid API key: [redacted]" in error.details["provider_message"]
    assert_key_absent(error, WRONG_KEY)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
async def test_a_revoked_key_is_never_echoed_back_to_the_writer(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "unauthorized"

    with pytest.raises(ProviderError) as caught:
        await complete(provider, fake, session)

    assert caught.value.code == "provider_auth_failed"
    assert_key_absent(caught.value, VALID_KEY)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_provider_rate_limiting_is_a_502_with_its_retry_after(
    provider: str, streamed: bool, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "rate_limited"

    with pytest.raises(ProviderError) as caught:
        if streamed:
            await stream(provider, fake, session)
        else:
            await complete(provider, fake, session)

    error = caught.value
    assert (error.status, error.code) == (502, "provider_rate_limited")
    assert error.details["retry_after"] == "7"
    assert error.details["provider_message"] == "Rate limit reached, slow down."


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
async def test_a_provider_server_error_is_a_502_with_its_message(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "server_error"

    with pytest.raises(ProviderError) as caught:
        await complete(provider, fake, session)

    error = caught.value
    assert (error.status, error.code) == (502, "provider_error")
    assert error.details["provider_status"] == 500
    assert "had an error" in error.message


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
@pytest.mark.parametrize("mode", ["malformed", "missing_fields"])
async def test_an_answer_that_is_not_json_or_lacks_the_text_is_a_bad_response(
    provider: str, mode: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = mode

    with pytest.raises(ProviderError) as caught:
        await complete(provider, fake, session)

    assert (caught.value.status, caught.value.code) == (502, "provider_bad_response")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
async def test_a_stream_of_garbage_is_a_bad_response(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "malformed"

    with pytest.raises(ProviderError) as caught:
        await stream(provider, fake, session)

    assert caught.value.code == "provider_bad_response"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_provider_that_does_not_answer_in_time_is_a_504(
    provider: str, streamed: bool, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "slow"

    with pytest.raises(ProviderTimeout) as caught:
        if streamed:
            await stream(provider, fake, session, timeout=0.3)
        else:
            await complete(provider, fake, session, timeout=0.3)

    error = caught.value
    assert (error.status, error.code) == (504, "provider_timeout")
    assert error.details["timeout_seconds"] == 0.3


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
async def test_a_stream_that_falls_silent_midway_times_out(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "stall_stream"
    received: list[StreamEvent] = []

    with pytest.raises(ProviderTimeout):
        await stream(provider, fake, session, timeout=0.3, into=received)

    assert not any(event.is_final for event in received)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "cohere"])
async def test_a_stream_cut_before_its_last_event_is_an_error_not_a_short_answer(
    provider: str, fake: FakeProvider, session: aiohttp.ClientSession
) -> None:
    fake.mode = "truncated_stream"
    received: list[StreamEvent] = []

    with pytest.raises(ProviderError) as caught:
        await stream(provider, fake, session, into=received)

    assert caught.value.code == "provider_error"
    assert "ended the stream" in caught.value.message
    assert not any(event.is_final for event in received)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_refused_connection_says_the_provider_is_unreachable(
    streamed: bool, session: aiohttp.ClientSession
) -> None:
    adapter = adapter_for("ollama")
    base_url = f"http://127.0.0.1:{closed_port()}/v1"

    with pytest.raises(ProviderError) as caught:
        if streamed:
            async for _ in adapter.stream(
                session, api_key="", base_url=base_url, request=chapter_request(), timeout=5
            ):
                pass
        else:
            await adapter.complete(
                session, api_key="", base_url=base_url, request=chapter_request(), timeout=5
            )

    error = caught.value
    assert (error.status, error.code) == (502, "provider_unreachable")
    assert "Could not reach Ollama at 127.0.0.1" in error.message


async def test_an_unknown_host_says_the_provider_is_unreachable(
    session: aiohttp.ClientSession,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await adapter_for("openai").complete(
            session,
            api_key=VALID_KEY,
            base_url="http://no-such-provider.invalid/v1",
            request=chapter_request(),
            timeout=10,
        )

    assert caught.value.code in ("provider_unreachable", "provider_timeout")
    assert_key_absent(caught.value, VALID_KEY)
