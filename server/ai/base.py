"""What every AI provider adapter shares: request and result types, errors, the HTTP call.

An adapter only says how to build its provider's request and read its answers; this
module sends it, maps every failure to ProviderError, and keeps the API key out of errors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from storage.errors import Invalid, OpenWriteError

ROLES = ("system", "user", "assistant")

# Bounds on what we read from a provider: the base URL is the writer's to choose, so a
# misbehaving endpoint must not be able to make us buffer without limit.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_SSE_LINE_BYTES = 1024 * 1024
# Role markers and separators cost a few tokens per message beyond its text.
_TOKENS_PER_MESSAGE = 4
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """One chat completion as the writer asked for it, whatever the provider.

    `stream` records what the client asked; `ProviderAdapter.complete` and `.stream` are
    separate calls, so the caller picks one from it.
    """

    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    stream: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(self.messages))
        if not self.model.strip():
            raise Invalid("A model is required.", details={"field": "model"})
        if not self.messages:
            raise Invalid("At least one message is required.", details={"field": "messages"})
        for index, message in enumerate(self.messages):
            if message.role not in ROLES:
                raise Invalid(
                    f"Message role must be one of {', '.join(ROLES)}.",
                    details={"field": f"messages[{index}].role", "role": message.role},
                )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise Invalid("max_tokens must be at least 1.", details={"field": "max_tokens"})


@dataclass(frozen=True)
class Usage:
    """Tokens spent on one call; `estimated` when the provider did not report them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool = False

    @classmethod
    def of(cls, prompt: int, completion: int, total: int | None = None) -> Usage:
        return cls(prompt, completion, total if total is not None else prompt + completion)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: Usage
    raw: dict[str, Any] = field(repr=False)
    stop_reason: str | None = None


@dataclass(frozen=True)
class StreamEvent:
    """A piece of the answer (`text`), or the last event of a stream, which carries `usage`."""

    text: str = ""
    usage: Usage | None = None
    stop_reason: str | None = None

    @property
    def is_final(self) -> bool:
        return self.usage is not None


class ProviderError(OpenWriteError):
    """The AI provider failed or refused; its own message is in `details`, never the key."""

    status = 502
    code = "provider_error"


class ProviderTimeout(ProviderError):
    status = 504
    code = "provider_timeout"


@dataclass(frozen=True)
class ProviderCall:
    """The HTTP request an adapter wants sent."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str


def bad_response(message: str, **details: Any) -> ProviderError:
    return ProviderError(message, code="provider_bad_response", details=details)


def dig(data: Any, *path: str | int, kind: type | None = None) -> Any:
    """`data[path[0]][path[1]]...`, or provider_bad_response naming what is missing.

    With `kind`, the value found must also be of that type.
    """
    current = data
    for depth, step in enumerate(path):
        try:
            current = current[step]
        except (KeyError, IndexError, TypeError):
            raise _missing(path[: depth + 1]) from None
    if kind is not None and not isinstance(current, kind):
        raise _missing(path)
    return current


def _missing(path: tuple[str | int, ...]) -> ProviderError:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return bad_response(f"The provider's answer has no usable {where}.", missing=where)


def token_count(value: Any) -> int | None:
    """A token count from a provider's JSON, or None when absent or not a count."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_json_object(text: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        snippet = text[:200].decode("utf-8", "replace") if isinstance(text, bytes) else text[:200]
        raise bad_response(
            "The provider answered with something that is not JSON.", body=snippet
        ) from None
    if not isinstance(data, dict):
        raise bad_response("The provider answered with JSON that is not an object.")
    return data


def scrub(value: Any, secret: str) -> Any:
    """`value` with every occurrence of `secret` replaced, through nested dicts and lists."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, _REDACTED)
    if isinstance(value, dict):
        return {scrub(k, secret): scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, secret) for item in value]
    return value


def check_base_url(url: str) -> str:
    """A writer's base URL override, normalized; ValueError saying why it is refused.

    SSRF policy: the server POSTs to this URL on the writer's behalf, and a self-hosted
    Ollama on localhost or the LAN is a main use case, so loopback and private addresses
    stay allowed. Refused: schemes other than http(s), credentials in the URL (they would
    be sent as Basic auth and shown back), query strings and fragments (adapters append
    paths), and literal link-local addresses, where cloud metadata services answer.
    Redirects are never followed and answers are read with size limits.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError("base_url must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("base_url needs a host name")
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not contain credentials; use api_key")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query string or fragment")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address is not None and address.is_link_local:
        raise ValueError("base_url must not point at a link-local address")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("base_url has an invalid port") from None
    return parts.geturl().rstrip("/")


class ProviderAdapter(ABC):
    """One provider family. Subclasses build requests and read answers; this class calls.

    `complete` and `stream` take the session from the caller so connections are pooled
    across requests; `timeout` is in seconds: the whole call for `complete`, connecting
    and each silence between chunks for `stream` (a long chapter may stream for minutes).
    """

    name: str
    display_name: str
    default_base_url: str
    requires_key: bool = True
    # Sent when the writer gives no max_tokens, so estimate_tokens stays an upper bound.
    default_max_tokens: int = 1024

    @abstractmethod
    def build_call(
        self, request: CompletionRequest, *, base_url: str, api_key: str, stream: bool
    ) -> ProviderCall:
        """The URL, headers and JSON body for `request`."""

    @abstractmethod
    def parse_completion(self, data: dict[str, Any], request: CompletionRequest) -> Completion:
        """A non-streamed answer; raise `bad_response` (or use `dig`) when it is malformed."""

    @abstractmethod
    def parse_stream(
        self, events: AsyncIterator[SseEvent], request: CompletionRequest
    ) -> AsyncIterator[StreamEvent]:
        """Text events from the provider's SSE stream, then exactly one final event."""

    def error_message(self, data: dict[str, Any]) -> str | None:
        """The provider's explanation in an error body; the common shapes by default."""
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return data["message"]
        return None

    def error_code(self, status: int, data: dict[str, Any]) -> str:
        if status in (401, 403):
            return "provider_auth_failed"
        if status == 429:
            return "provider_rate_limited"
        return "provider_error"

    def max_tokens_for(self, request: CompletionRequest) -> int:
        return request.max_tokens or self.default_max_tokens

    def estimate_tokens(self, request: CompletionRequest) -> int:
        """A conservative bound on the call's tokens, reserved from the quota beforehand.

        UTF-8 bytes / 3 is at least characters / 3 for English and still about one token
        per character for CJK prose, where characters / 3 would reserve far too little.
        """
        prompt = sum(
            math.ceil(len(message.content.encode("utf-8")) / 3) + _TOKENS_PER_MESSAGE
            for message in request.messages
        )
        return prompt + self.max_tokens_for(request)

    def completion(
        self,
        request: CompletionRequest,
        data: dict[str, Any],
        *,
        text: str,
        usage: Usage | None,
        model: Any,
        stop_reason: Any,
    ) -> Completion:
        """A parsed answer: the model asked for when the provider names none, and an
        estimate when it reports no usage, so the call is still counted."""
        return Completion(
            text=text,
            model=model or request.model,
            usage=usage or self.estimated_usage(request, text),
            raw=data,
            stop_reason=stop_reason,
        )

    def estimated_usage(self, request: CompletionRequest, text: str) -> Usage:
        """Usage when the provider reported none, so the call is still counted."""
        prompt = self.estimate_tokens(request) - self.max_tokens_for(request)
        completion = math.ceil(len(text.encode("utf-8")) / 3)
        return Usage(prompt, completion, prompt + completion, estimated=True)

    async def complete(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str | None,
        request: CompletionRequest,
        timeout: float,
    ) -> Completion:
        """Send `request` and return the whole answer."""
        with self._provider_errors(api_key, timeout):
            call = self._call(request, api_key=api_key, base_url=base_url, stream=False)
            async with session.post(
                call.url,
                json=call.body,
                headers=call.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                await self._check_status(response)
                body = await _read_limited(response, MAX_ANSWER_BYTES, truncate=False)
                with _answer_shape():
                    return self.parse_completion(parse_json_object(body), request)

    async def stream(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str | None,
        request: CompletionRequest,
        timeout: float,
    ) -> AsyncIterator[StreamEvent]:
        """Send `request` streamed: text events as they come, then one final event with usage."""
        with self._provider_errors(api_key, timeout):
            call = self._call(request, api_key=api_key, base_url=base_url, stream=True)
            async with session.post(
                call.url,
                json=call.body,
                headers={**call.headers, "Accept": "text/event-stream"},
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
                allow_redirects=False,
            ) as response:
                await self._check_status(response)
                if response.content_type == "application/json":
                    # Some compatible servers ignore `stream`; answer the same way anyway.
                    body = await _read_limited(response, MAX_ANSWER_BYTES, truncate=False)
                    with _answer_shape():
                        completion = self.parse_completion(parse_json_object(body), request)
                    if completion.text:
                        yield StreamEvent(text=completion.text)
                    yield StreamEvent(usage=completion.usage, stop_reason=completion.stop_reason)
                    return
                finished = False
                with _answer_shape():
                    async for event in self.parse_stream(read_sse(response), request):
                        if finished:
                            raise bad_response("The provider kept streaming after its last event.")
                        finished = event.is_final
                        yield event
                if not finished:
                    raise ProviderError(
                        f"{self.display_name} ended the stream before the answer was complete."
                    )

    def _call(
        self, request: CompletionRequest, *, api_key: str, base_url: str | None, stream: bool
    ) -> ProviderCall:
        if self.requires_key and not api_key:
            raise ProviderError(
                f"No API key is configured for {self.display_name}.", code="provider_auth_failed"
            )
        base = (base_url or self.default_base_url).rstrip("/")
        return self.build_call(request, base_url=base, api_key=api_key, stream=stream)

    async def _check_status(self, response: aiohttp.ClientResponse) -> None:
        if 200 <= response.status < 300:
            return
        body = await _read_limited(response, MAX_ERROR_BYTES, truncate=True)
        parsed = _json_or_empty(body)
        provider_message = (self.error_message(parsed) if parsed else None) or (
            body[:500].decode("utf-8", "replace").strip() or response.reason or ""
        )
        status = response.status
        details: dict[str, Any] = {
            "provider_status": status,
            "provider_message": provider_message,
        }
        if 300 <= status < 400:
            raise ProviderError(
                f"{self.display_name} answered with a redirect (HTTP {status}); "
                "check the base URL.",
                code="provider_bad_response",
                details={**details, "location": response.headers.get("Location", "")},
            )
        code = self.error_code(status, parsed)
        if code == "provider_auth_failed":
            summary = "rejected the API key"
        elif code == "provider_rate_limited":
            summary = "is rate limiting this API key"
            if "Retry-After" in response.headers:
                details["retry_after"] = response.headers["Retry-After"]
        elif status >= 500:
            summary = f"failed (HTTP {status})"
        else:
            summary = f"refused the request (HTTP {status})"
        raise ProviderError(
            f"{self.display_name} {summary}: {provider_message[:500]}", code=code, details=details
        )

    @contextlib.contextmanager
    def _provider_errors(self, api_key: str, timeout: float) -> Iterator[None]:
        """Turn transport failures into ProviderError and scrub the key from all of them."""
        try:
            try:
                yield
            except TimeoutError:
                # Before ClientError: aiohttp's ServerTimeoutError is both.
                raise ProviderTimeout(
                    f"{self.display_name} did not answer within {timeout:g} seconds.",
                    details={"timeout_seconds": timeout},
                ) from None
            except aiohttp.ClientConnectorError as exc:
                raise ProviderError(
                    f"Could not reach {self.display_name} at {exc.host}:{exc.port} "
                    f"({exc.os_error.strerror or exc.os_error}); check the base URL.",
                    code="provider_unreachable",
                    details={"host": exc.host, "port": exc.port},
                ) from None
            except aiohttp.InvalidURL as exc:
                raise ProviderError(
                    f"The base URL for {self.display_name} is not a valid URL.",
                    details={"url": str(exc.url)},
                ) from None
            except aiohttp.ClientError as exc:
                raise ProviderError(
                    f"The connection to {self.display_name} failed: {exc}",
                    details={"reason": type(exc).__name__},
                ) from None
        except ProviderError as exc:
            exc.message = scrub(exc.message, api_key)
            exc.args = (exc.message,)
            exc.details = scrub({"provider": self.name, **exc.details}, api_key)
            raise


@contextlib.contextmanager
def _answer_shape() -> Iterator[None]:
    # Parsers check what they rely on; this net catches the shapes nobody foresaw, so an
    # odd answer is the provider's fault (502), never a crash of ours (500).
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise bad_response(
            "The provider's answer is not in the expected shape.", reason=type(exc).__name__
        ) from None


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(body)
    except ProviderError:
        return {}


async def _read_limited(response: aiohttp.ClientResponse, limit: int, *, truncate: bool) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            if truncate:
                return bytes(body[:limit])
            raise bad_response(f"The provider's answer is larger than {limit} bytes.")
    return bytes(body)


async def read_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Server-sent events from `response`, per the WHATWG rules we need (no ids, no retry)."""
    event_type = ""
    data_lines: list[str] = []
    async for line in _lines(response):
        if not line:
            if data_lines:
                yield SseEvent(event_type or "message", "\n".join(data_lines))
            event_type, data_lines = "", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event_type = value
            elif name == "data":
                data_lines.append(value)
    # A stream cut without its closing blank line still delivers what it said.
    if data_lines:
        yield SseEvent(event_type or "message", "\n".join(data_lines))


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    # Our own splitting rather than StreamReader.readline, whose line limit is not ours.
    buffer = bytearray()
    async for chunk in response.content.iter_any():
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            yield bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
            del buffer[: end + 1]
        if len(buffer) > MAX_SSE_LINE_BYTES:
            raise bad_response("The provider sent a stream line longer than we accept.")
    if buffer:
        yield bytes(buffer).rstrip(b"\r").decode("utf-8", "replace")
