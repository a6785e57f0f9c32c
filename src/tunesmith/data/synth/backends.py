"""Where synthetic text comes from: a local model tunesmith can load, or any OpenAI-compatible endpoint.

Both expose one call, `complete(conversations, temperature, max_new_tokens, seed) -> list[str | None]`:
one answer per conversation (a list of {role, content} messages), None where that item failed (counted in
`stats`, retried by the next run). A dead endpoint, a rejected key or a server that keeps answering garbage
raises `TunesmithError` instead of silently producing nothing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from tunesmith.errors import TunesmithError

Conversation = list[dict[str, str]]


@dataclass
class BackendStats:
    """Counts of what the backend did; `failures` by reason (timeout, http 500, garbage, ...)."""

    requests: int = 0
    completions: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


class Backend(Protocol):
    stats: BackendStats

    def complete(self, conversations: list[Conversation], temperature: float, max_new_tokens: int,
                 seed: int = 0) -> list[str | None]: ...


class LocalBackend:
    """A model tunesmith can load (HF folder, .gguf or the bundled alias), generating in length-sorted batches."""

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "auto", template: str = "auto",
                 batch_size: int = 8):
        from tunesmith.serving.engine import load_for_inference

        self.name = model
        self.batch_size = batch_size
        self.model, self.tokenizer = load_for_inference(model, adapter, dtype=dtype, template=template)
        self.stats = BackendStats()

    def complete(self, conversations: list[Conversation], temperature: float, max_new_tokens: int,
                 seed: int = 0) -> list[str | None]:
        from tunesmith.data.templates import render_prompt
        from tunesmith.serving.engine import generate

        prompts = [render_prompt(c, self.tokenizer) for c in conversations]
        self.stats.requests += len(prompts)
        results = generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=1.0 if temperature == 0 else 0.95,
                           batch_size=self.batch_size, seed=seed)
        self.stats.completions += len(results)
        return [r.text for r in results]


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def chat_url(endpoint: str) -> str:
    """The chat-completions URL for a base URL given with or without /v1 (or already complete)."""
    url = endpoint.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


class EndpointBackend:
    """POST /v1/chat/completions, `concurrency` requests in flight, retries with exponential backoff.

    Timeouts, refused connections, 429 and 5xx are retried (`retries` times, waiting backoff * 2^k s);
    401/403/404 and other 4xx stop at once (a wrong key, model or URL will not fix itself). A 200 whose body
    is not a chat completion counts as 'garbage' and the item comes back None; `max_consecutive_failures`
    failed items in a row raise, and so does an endpoint that cannot be reached at all.
    """

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 1.0, concurrency: int = 4, max_consecutive_failures: int = 8):
        if not endpoint.startswith(("http://", "https://")):
            raise TunesmithError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
        self.url = chat_url(endpoint)
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.retries, self.backoff, self.concurrency = retries, backoff, max(1, concurrency)
        self.max_consecutive_failures = max_consecutive_failures
        self.stats = BackendStats()
        self._lock = threading.Lock()
        self._consecutive = 0

    def complete(self, conversations: list[Conversation], temperature: float, max_new_tokens: int,
                 seed: int = 0) -> list[str | None]:
        payloads = [{"model": self.model, "messages": c, "temperature": temperature, "max_tokens": max_new_tokens,
                     "seed": seed} for c in conversations]
        if self.concurrency == 1 or len(payloads) == 1:
            return [self._one(p) for p in payloads]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, payloads))

    def _one(self, payload: dict) -> str | None:
        """One completion with retries; None (counted) when it fails in a way the next item may not."""
        body = json.dumps(payload).encode("utf-8")
        for attempt in range(self.retries + 1):
            with self._lock:
                self.stats.requests += 1
            try:
                text = _parse_completion(self._post(body))
            except _Retryable as exc:
                if attempt < self.retries:
                    with self._lock:
                        self.stats.retries += 1
                    time.sleep(self.backoff * 2**attempt)
                    continue
                if exc.reason == "connection":
                    raise TunesmithError(f"endpoint {self.url} is unreachable after {self.retries + 1} attempts: {exc}") from None
                return self._failed(exc.reason, str(exc))
            except ValueError as exc:  # a 200 that is not a chat completion
                return self._failed("garbage", str(exc))
            with self._lock:
                self.stats.completions += 1
                self._consecutive = 0
            return text
        return None  # pragma: no cover - the loop always returns

    def _failed(self, reason: str, detail: str) -> None:
        with self._lock:
            self.stats.fail(reason)
            self._consecutive += 1
            if self._consecutive >= self.max_consecutive_failures:
                raise TunesmithError(f"endpoint {self.url} failed {self._consecutive} requests in a row "
                                     f"(last: {reason}: {detail}); is it serving model {self.model!r}?")
        return None

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"http {exc.code}", detail) from None
            raise TunesmithError(f"endpoint {self.url} refused the request: HTTP {exc.code} {detail}") from None
        except (TimeoutError, socket.timeout):
            raise _Retryable("timeout", f"no answer within {self.timeout} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise _Retryable("timeout", f"no answer within {self.timeout} s") from None
            raise _Retryable("connection", str(exc.reason)) from None
        except (ConnectionError, OSError) as exc:  # reset mid-response
            raise _Retryable("connection", str(exc)) from None


def _parse_completion(raw: bytes) -> str:
    """choices[0].message.content of a chat-completion body; ValueError when it is anything else."""
    try:
        doc = json.loads(raw)
        content = doc["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ValueError(f"not a chat completion: {raw[:120]!r}") from None
    if not isinstance(content, str):
        raise ValueError(f"message content is {type(content).__name__}, not text")
    return content


def make_backend(model: str, endpoint: str | None = None, api_key: str | None = None, *, adapter: str | None = None,
                 dtype: str = "auto", template: str = "auto", batch_size: int = 8, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 1.0, concurrency: int = 4) -> Backend:
    """An EndpointBackend when `endpoint` is given (model = the served model's name), else a LocalBackend."""
    if endpoint:
        return EndpointBackend(endpoint, model, api_key, timeout=timeout, retries=retries, backoff=backoff,
                               concurrency=concurrency)
    return LocalBackend(model, adapter=adapter, dtype=dtype, template=template, batch_size=batch_size)
