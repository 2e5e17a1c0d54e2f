"""The AI routes through the real server: connections, the completion proxy, usage limits.

Providers are the fake on loopback (tests/fake_providers.py); SQLite is a real file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.ai import PROVIDERS
from tests.conftest import Writer
from tests.fake_providers import DEFAULT_REPLY, VALID_KEY, FakeProvider, start_fake_provider

PROVIDERS_URL = "/api/v1/ai/providers"
COMPLETE_URL = "/api/v1/ai/complete"
PROMPT = "Open chapter one by the sea."
REPLY_WORDS = len(DEFAULT_REPLY.split())


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    fake = await start_fake_provider()
    yield fake
    await fake.close()


async def connect(writer: Writer, fake: FakeProvider, provider: str = "openai", **fields: Any):
    body = {
        "provider": provider,
        "api_key": VALID_KEY,
        "provider_config": {"base_url": fake.base_url(provider), "timeout_seconds": 5},
        **fields,
    }
    status, answer = await writer.call("POST", PROVIDERS_URL, body)
    assert status == 201, answer
    return answer


async def connection(writer: Writer, provider_id: str) -> dict[str, Any]:
    status, answer = await writer.call("GET", PROVIDERS_URL)
    assert status == 200
    return next(item for item in answer["items"] if item["id"] == provider_id)


def ask(provider_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"model": "novel-model", "messages": [{"role": "user", "content": PROMPT}], **fields}
    if provider_id is not None:
        body["provider_id"] = provider_id
    return body


async def stream(writer: Writer, body: dict[str, Any]) -> tuple[int, list[tuple[str, Any]]]:
    """Status and the (event, data) pairs of a streamed completion; JSON errors as one pair."""
    response = await writer.client.post(
        COMPLETE_URL, json={**body, "stream": True}, headers=writer.headers
    )
    text = await response.text()
    if response.content_type != "text/event-stream":
        return response.status, [("json", json.loads(text))]
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((lines["event"], json.loads(lines["data"])))
    return response.status, events


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_family_answers_through_the_route_and_its_usage_is_counted(
    ann: Writer, fake: FakeProvider, provider: str
) -> None:
    created = await connect(ann, fake, provider, usage_limit=10_000)

    status, answer = await ann.call("POST", COMPLETE_URL, ask(created["id"], max_tokens=200))

    assert status == 200, answer
    assert answer["text"] == DEFAULT_REPLY
    assert answer["provider_id"] == created["id"]
    used = answer["usage"]["total_tokens"]
    assert answer["usage"]["completion_tokens"] == REPLY_WORDS
    assert answer["usage_remaining"] == 10_000 - used
    after = await connection(ann, created["id"])
    assert after["current_usage"] == used
    assert after["reserved_usage"] == 0
    assert after["usage_remaining"] == 10_000 - used
    assert after["last_used_at"] is not None
    assert len(fake.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_family_streams_deltas_then_a_final_event_with_usage(
    ann: Writer, fake: FakeProvider, provider: str
) -> None:
    created = await connect(ann, fake, provider, usage_limit=10_000)

    status, events = await stream(ann, ask(created["id"]))

    assert status == 200, events
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"}
    assert "".join(data["text"] for kind, data in events if kind == "delta") == DEFAULT_REPLY
    done = events[-1][1]
    assert done["usage"]["completion_tokens"] == REPLY_WORDS
    assert done["usage_remaining"] == 10_000 - done["usage"]["total_tokens"]
    after = await connection(ann, created["id"])
    assert after["current_usage"] == done["usage"]["total_tokens"]
    assert after["reserved_usage"] == 0


async def test_without_a_limit_usage_is_counted_and_nothing_remains_to_report(
    ann: Writer, fake: FakeProvider
) -> None:
    created = await connect(ann, fake)

    status, answer = await ann.call("POST", COMPLETE_URL, ask(created["id"]))

    assert status == 200
    assert answer["usage_remaining"] is None
    assert (await connection(ann, created["id"]))["current_usage"] == answer["usage"][
        "total_tokens"
    ]


async def test_the_key_never_comes_back_only_its_last_four_characters(
    ann: Writer, fake: FakeProvider
) -> None:
    status, created = await ann.call(
        "POST",
        PROVIDERS_URL,
        {"provider": "anthropic", "api_key": f"  {VALID_KEY}  ", "key_label": "Work"},
    )
    listed = await ann.client.get(PROVIDERS_URL, headers=ann.headers)

    assert status == 201
    assert created["key_hint"] == VALID_KEY[-4:]
    assert created["has_key"] is True
    assert "api_key" not in created
    assert VALID_KEY not in json.dumps(created)
    assert VALID_KEY not in await listed.text()


async def test_a_request_over_the_limit_is_refused_before_the_provider_is_called(
    ann: Writer, fake: FakeProvider
) -> None:
    created = await connect(ann, fake, usage_limit=50)

    status, answer = await ann.call("POST", COMPLETE_URL, ask(created["id"], max_tokens=100))
    stream_status, events = await stream(ann, ask(created["id"], max_tokens=100))

    assert status == 429
    assert answer["error"]["code"] == "usage_limit_exceeded"
    assert answer["error"]["details"]["usage_limit"] == 50
    assert stream_status == 429
    assert events[0][1]["error"]["code"] == "usage_limit_exceeded"
    assert fake.requests == []
    assert (await connection(ann, created["id"]))["reserved_usage"] == 0


async def test_twenty_concurrent_requests_cannot_spend_more_than_the_limit(
    ann: Writer, fake: FakeProvider
) -> None:
    # Each request reserves 1 + 4 prompt tokens + 100 max_tokens = 105: five fit in 525.
    created = await connect(ann, fake, usage_limit=525)
    fake.mode, fake.delay = "slow", 1.0
    body = ask(created["id"], max_tokens=100, messages=[{"role": "user", "content": "Hi"}])

    results = await asyncio.gather(*(ann.call("POST", COMPLETE_URL, body) for _ in range(20)))

    answered = [answer for status, answer in results if status == 200]
    refused = [answer for status, answer in results if status == 429]
    assert len(answered) == 5
    assert len(refused) == 15
    assert {answer["error"]["code"] for answer in refused} == {"usage_limit_exceeded"}
    assert len(fake.requests) == len(answered)
    after = await connection(ann, created["id"])
    assert after["current_usage"] == sum(a["usage"]["total_tokens"] for a in answered)
    assert after["current_usage"] <= 525
    assert after["reserved_usage"] == 0


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("unauthorized", "provider_auth_failed"),
        ("rate_limited", "provider_rate_limited"),
        ("server_error", "provider_error"),
        ("malformed", "provider_bad_response"),
        ("missing_fields", "provider_bad_response"),
    ],
)
async def test_a_failing_provider_is_a_502_with_the_reason_and_costs_nothing(
    ann: Writer, fake: FakeProvider, mode: str, code: str
) -> None:
    created = await connect(ann, fake, usage_limit=10_000)
    fake.mode = mode

    response = await ann.client.post(COMPLETE_URL, json=ask(created["id"]), headers=ann.headers)
    answer = await response.json()

    assert response.status == 502
    assert answer["error"]["code"] == code
    assert VALID_KEY not in json.dumps(answer)
    if mode == "rate_limited":
        assert response.headers["Retry-After"] == "7"
    after = await connection(ann, created["id"])
    assert (after["current_usage"], after["reserved_usage"]) == (0, 0)


async def test_a_provider_that_does_not_answer_in_time_is_a_504(
    ann: Writer, fake: FakeProvider
) -> None:
    created = await connect(
        ann, fake, provider_config={"base_url": fake.base_url("openai"), "timeout_seconds": 1}
    )
    fake.mode, fake.delay = "slow", 5.0

    status, answer = await ann.call("POST", COMPLETE_URL, ask(created["id"]))

    assert status == 504
    assert answer["error"]["code"] == "provider_timeout"
    assert (await connection(ann, created["id"]))["reserved_usage"] == 0


async def test_an_unreachable_provider_is_a_502(ann: Writer, fake: FakeProvider) -> None:
    created = await connect(
        ann, fake, provider_config={"base_url": "http://127.0.0.1:9/v1", "timeout_seconds": 2}
    )

    status, answer = await ann.call("POST", COMPLETE_URL, ask(created["id"]))

    assert status == 502
    assert answer["error"]["code"] == "provider_unreachable"


async def test_a_stream_refused_at_the_start_is_a_plain_json_error(
    ann: Writer, fake: FakeProvider
) -> None:
    created = await connect(ann, fake, "anthropic")
    fake.mode = "unauthorized"

    status, events = await stream(ann, ask(created["id"]))

    assert status == 502
    assert events[0][1]["error"]["code"] == "provider_auth_failed"
    assert VALID_KEY not in json.dumps(events)


async def test_a_stream_cut_midway_ends_with_an_error_event_and_counts_what_was_sent(
    ann: Writer, fake: FakeProvider
) -> None:
    created = await connect(ann, fake, "openai", usage_limit=10_000)
    fake.mode = "truncated_stream"

    status, events = await stream(ann, ask(created["id"]))

    assert status == 200
    assert events[0] == ("delta", {"text": "The "})
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] in ("provider_error", "provider_bad_response")
    after = await connection(ann, created["id"])
    assert after["reserved_usage"] == 0
    assert after["current_usage"] > 0  # what was streamed is paid for, estimated


async def test_a_client_leaving_mid_stream_releases_its_reservation(
    ann: Writer, fake: FakeProvider
) -> None:
    created = await connect(ann, fake, usage_limit=10_000)
    fake.mode, fake.delay = "stall_stream", 1.0
    response = await ann.client.post(
        COMPLETE_URL, json={**ask(created["id"]), "stream": True}, headers=ann.headers
    )
    assert response.status == 200
    first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"event: delta")
    assert (await connection(ann, created["id"]))["reserved_usage"] > 0

    response.close()

    for _ in range(100):
        after = await connection(ann, created["id"])
        if after["reserved_usage"] == 0:
            break
        await asyncio.sleep(0.05)
    assert after["reserved_usage"] == 0
    assert after["current_usage"] > 0  # the text already produced is paid for


async def test_another_writers_connection_does_not_exist_for_them(
    ann: Writer, bob: Writer, fake: FakeProvider
) -> None:
    created = await connect(ann, fake)
    path = f"{PROVIDERS_URL}/{created['id']}"

    listed = await bob.call("GET", PROVIDERS_URL)
    patched = await bob.call("PATCH", path, {"key_label": "mine now"})
    completed = await bob.call("POST", COMPLETE_URL, ask(created["id"]))
    deleted = await bob.call("DELETE", path)

    assert listed == (200, {"items": [], "next_cursor": None})
    assert patched[0] == deleted[0] == completed[0] == 404
    assert completed[1]["error"]["code"] == "provider_not_found"
    assert fake.requests == []
    assert (await connection(ann, created["id"]))["key_label"] is None


async def test_each_writer_has_at_most_one_default_and_it_answers_without_provider_id(
    ann: Writer, bob: Writer, fake: FakeProvider
) -> None:
    first = await connect(ann, fake, "openai", is_default=True)
    second = await connect(ann, fake, "anthropic", is_default=True)
    bobs = await connect(bob, fake, "openai", is_default=True)

    defaults = [item["id"] for item in (await ann.call("GET", PROVIDERS_URL))[1]["items"]
                if item["is_default"]]  # fmt: skip
    assert defaults == [second["id"]]
    assert (await connection(bob, bobs["id"]))["is_default"] is True

    status, answer = await ann.call("POST", COMPLETE_URL, ask())
    assert status == 200 and answer["provider_id"] == second["id"]
    assert fake.requests[-1].api == "anthropic"

    status, patched = await ann.call(
        "PATCH", f"{PROVIDERS_URL}/{first['id']}", {"is_default": True}
    )
    assert status == 200 and patched["is_default"] is True
    assert (await connection(ann, second["id"]))["is_default"] is False
    status, answer = await ann.call("POST", COMPLETE_URL, ask())
    assert answer["provider_id"] == first["id"]


async def test_without_a_default_a_completion_needs_a_provider_id(
    ann: Writer, fake: FakeProvider
) -> None:
    await connect(ann, fake)

    status, answer = await ann.call("POST", COMPLETE_URL, ask())

    assert status == 404
    assert answer["error"]["code"] == "no_default_provider"


async def test_the_same_key_added_twice_is_a_conflict(
    ann: Writer, bob: Writer, fake: FakeProvider
) -> None:
    await connect(ann, fake, "openai")
    other = await connect(ann, fake, "openai", api_key="sk-another-key-1234567890")

    again = await ann.call("POST", PROVIDERS_URL, {"provider": "openai", "api_key": VALID_KEY})
    padded = await ann.call(
        "POST", PROVIDERS_URL, {"provider": "openai", "api_key": f"\t{VALID_KEY} "}
    )
    patched = await ann.call("PATCH", f"{PROVIDERS_URL}/{other['id']}", {"api_key": VALID_KEY})

    for status, answer in (again, padded, patched):
        assert status == 409
        assert answer["error"]["code"] == "duplicate_key"
        assert VALID_KEY not in json.dumps(answer)
    # Another provider, or another writer, may hold the same key.
    await connect(ann, fake, "openrouter")
    await connect(bob, fake, "openai")


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "skynet", "api_key": VALID_KEY},
        {"provider": "openai"},
        {"provider": "openai", "api_key": "has a space"},
        {"provider": "openai", "api_key": VALID_KEY, "usage_limit": -1},
        {"provider": "openai", "api_key": VALID_KEY, "supported_models": "gpt-4o"},
        {"provider": "openai", "api_key": VALID_KEY, "supported_models": [1, 2]},
        {"provider": "openai", "api_key": VALID_KEY, "provider_config": []},
        {"provider": "openai", "api_key": VALID_KEY, "provider_config": {"base_url": "ftp://x"}},
        {"provider": "openai", "api_key": VALID_KEY, "provider_config": {"base_url": "localhost"}},
        {"provider": "openai", "api_key": VALID_KEY,
         "provider_config": {"base_url": "http://169.254.169.254/latest"}},
        {"provider": "openai", "api_key": VALID_KEY,
         "provider_config": {"base_url": "http://user:pw@example.com"}},
        {"provider": "openai", "api_key": VALID_KEY, "provider_config": {"baseurl": "http://x"}},
        {"provider": "openai", "api_key": VALID_KEY, "provider_config": {"timeout_seconds": 0}},
        {"provider": "openai", "api_key": VALID_KEY, "is_default": "maybe"},
    ],
)  # fmt: skip
async def test_an_invalid_connection_is_refused_with_422(ann: Writer, body: dict) -> None:
    status, answer = await ann.call("POST", PROVIDERS_URL, body)

    assert status == 422, answer
    assert VALID_KEY not in json.dumps(answer)
    assert (await ann.call("GET", PROVIDERS_URL))[1]["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "", "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": [{"role": "narrator", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user"}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "x"}]},
    ],
)
async def test_an_invalid_completion_request_is_refused_with_422(
    ann: Writer, fake: FakeProvider, body: dict
) -> None:
    created = await connect(ann, fake, is_default=True)

    status, answer = await ann.call("POST", COMPLETE_URL, body)

    assert status == 422, answer
    assert fake.requests == []
    assert (await connection(ann, created["id"]))["reserved_usage"] == 0


async def test_a_model_outside_supported_models_is_refused(ann: Writer, fake: FakeProvider) -> None:
    created = await connect(ann, fake, supported_models=["novel-model", "other"])

    ok = await ann.call("POST", COMPLETE_URL, ask(created["id"]))
    refused = await ann.call("POST", COMPLETE_URL, {**ask(created["id"]), "model": "gpt-9"})

    assert ok[0] == 200
    assert refused[0] == 422
    assert refused[1]["error"]["code"] == "model_not_supported"
    assert len(fake.requests) == 1


async def test_a_local_ollama_needs_no_key(ann: Writer, fake: FakeProvider) -> None:
    fake.keyless = True
    status, created = await ann.call(
        "POST",
        PROVIDERS_URL,
        {"provider": "ollama", "provider_config": {"base_url": fake.base_url("ollama")}},
    )

    answer = await ann.call("POST", COMPLETE_URL, ask(created["id"]))

    assert status == 201
    assert (created["has_key"], created["key_hint"]) == (False, None)
    assert answer[0] == 200
    assert "Authorization" not in fake.requests[0].headers


async def test_a_connection_can_be_relabelled_limited_reset_and_removed(
    ann: Writer, fake: FakeProvider
) -> None:
    created = await connect(ann, fake)
    path = f"{PROVIDERS_URL}/{created['id']}"
    await ann.call("POST", COMPLETE_URL, ask(created["id"]))

    status, patched = await ann.call(
        "PATCH", path, {"key_label": "Novel budget", "usage_limit": 5000, "reset_usage": True}
    )
    assert status == 200
    assert (patched["key_label"], patched["usage_limit"]) == ("Novel budget", 5000)
    assert (patched["current_usage"], patched["usage_remaining"]) == (0, 5000)

    status, patched = await ann.call("PATCH", path, {"usage_limit": None, "key_label": None})
    assert (patched["usage_limit"], patched["usage_remaining"], patched["key_label"]) == (
        None,
        None,
        None,
    )
    for bad in (
        {"provider_config": {"base_url": "gopher://old"}},
        {"provider_config": None},
        {"is_default": None},
        {"api_key": None},
        {"provider": "anthropic"},
    ):
        assert (await ann.call("PATCH", path, bad))[0] == 422, bad

    assert (await ann.call("DELETE", path))[0] == 204
    assert (await ann.call("DELETE", path))[0] == 404
    assert (await ann.call("POST", COMPLETE_URL, ask(created["id"])))[0] == 404


async def test_a_new_key_replaces_the_old_one_and_is_used(ann: Writer, fake: FakeProvider) -> None:
    created = await connect(ann, fake, api_key="sk-wrong-key-000000000000")
    path = f"{PROVIDERS_URL}/{created['id']}"
    refused = await ann.call("POST", COMPLETE_URL, ask(created["id"]))

    status, patched = await ann.call("PATCH", path, {"api_key": VALID_KEY})
    answered = await ann.call("POST", COMPLETE_URL, ask(created["id"]))

    assert refused[0] == 502 and refused[1]["error"]["code"] == "provider_auth_failed"
    assert "sk-wrong-key-000000000000" not in json.dumps(refused[1])
    assert status == 200 and patched["key_hint"] == VALID_KEY[-4:]
    assert answered[0] == 200


async def test_the_ai_routes_are_in_the_openapi_document(ann: Writer) -> None:
    status, document = await ann.call("GET", "/api/v1/openapi.json")

    assert status == 200
    assert set(document["paths"]["/api/v1/ai/providers"]) == {"get", "post"}
    assert set(document["paths"]["/api/v1/ai/providers/{id}"]) == {"patch", "delete"}
    complete = document["paths"]["/api/v1/ai/complete"]["post"]
    assert {"429", "502", "504"} <= set(complete["responses"])
    assert "api_key" not in document["components"]["schemas"]["AiProvider"]["properties"]
