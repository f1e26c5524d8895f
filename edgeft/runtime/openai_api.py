"""The OpenAI wire format the server speaks (chat completions, models, errors), checked field by
field: an app written against llama-server, Ollama or OpenAI itself talks to edgeft unchanged, and a
bad request gets a 4xx with an OpenAI-style error body that names the field.

Fields read: model, messages, max_tokens (or max_completion_tokens), temperature, top_p, seed, stop,
stream, stream_options.include_usage, n (1 only), and llama.cpp's `ignore_eos` (generate max_tokens
whatever the model says: what load tests use). Others that clients send are accepted and ignored, as
the OpenAI server does with fields it does not use.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_STOP = 4


class ApiError(Exception):
    """An OpenAI-style error: status, message, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Chat:
    model: str
    messages: list[dict]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False


def _number(body: dict, name: str, low: float, high: float, default):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"'{name}' must be a number, not {type(value).__name__}", name)
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low:g} and {high:g}; got {value:g}", name)
    return value


def _integer(body: dict, name: str, low: int, high: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer, not {type(value).__name__}", name)
    if value < low or (high is not None and value > high):
        raise ApiError(400, f"'{name}' must be between {low} and {high}; got {value}", name)
    return value


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ApiError(400, "'messages' must be a list of {role, content} objects", "messages")
    if not messages:
        raise ApiError(400, "'messages' is empty: give at least one message", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"'messages[{i}].role' must be one of {', '.join(ROLES)}", f"messages[{i}].role")
        if not isinstance(m.get("content"), str):
            raise ApiError(400, f"'messages[{i}].content' must be a string", f"messages[{i}].content")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
        raise ApiError(400, f"'stop' must be a string or a list of at most {MAX_STOP} non-empty strings", "stop")
    return stops


def parse_chat(body: Any, models: list[str], context: int | None) -> Chat:
    """A chat completion request, checked; raises ApiError naming the field at fault."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model", models[0])
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", "model")
    if model not in models:
        raise ApiError(404, f"The model '{model}' does not exist (models: {', '.join(models)})", "model",
                       code="model_not_found")
    if body.get("n", 1) != 1:
        raise ApiError(400, "'n' must be 1: one answer per request", "n")
    limit = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    stream, ignore_eos = body.get("stream", False), body.get("ignore_eos", False)
    for flag, value in (("stream", stream), ("ignore_eos", ignore_eos)):
        if not isinstance(value, bool):
            raise ApiError(400, f"'{flag}' must be true or false", flag)
    options = body.get("stream_options") or {}
    return Chat(model=model, messages=_messages(body), max_tokens=_integer(body, limit, 1, context),
                temperature=_number(body, "temperature", 0, 2, 1.0), top_p=_number(body, "top_p", 0.0001, 1, 1.0),
                seed=_integer(body, "seed", -2**63, 2**63 - 1), stop=_stop(body), stream=stream,
                include_usage=bool(isinstance(options, dict) and options.get("include_usage")), ignore_eos=ignore_eos)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion(cid: str, model: str, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                         "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk(cid: str, model: str, delta: dict, reason: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def model_list(names: list[str]) -> dict:
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "edgeft"} for n in names]}
