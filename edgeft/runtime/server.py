"""`edgeft-runtime serve BUNDLE`: an OpenAI-compatible server for a bundle, so that an app on the
device talks to it as it would to llama-server or Ollama (the `serve` extra: starlette, uvicorn and
prometheus-client on top of the runtime).

    POST /v1/chat/completions   text generators: OpenAI's chat completions, streamed (server-sent
                                events, ending with `data: [DONE]`) or not; `"model": NAME` picks
                                an adapter of an unmerged base per request
    POST /v1/classify           classifiers: {"input": text or [texts]} -> labels and probabilities
    GET  /v1/models             the base and every adapter, by name
    GET  /health, /metrics      liveness; Prometheus text (requests, errors, tokens, queue, latencies)
    GET  /                      a chat page (no external assets), with an adapter picker

Generation runs on one engine thread that batches the conversations in hand (engine.py); the HTTP
side never blocks it. Binding anything but loopback needs an API key, checked as a Bearer token.
"""
from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from edgeft.runtime.engine import Engine, QueueFull, Request
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.openai_api import ApiError, Chat, chunk, completion, completion_id, model_list, parse_chat, usage
from edgeft.runtime.sampling import Sampler
from edgeft.runtime.serving import Served
from edgeft.runtime.textstream import TextStream

MAX_BODY = 1 << 20  # bytes of a request body
LOOPBACK = ("127.0.0.1", "localhost", "::1")


async def read_json(request, cap: int = MAX_BODY):
    """The body as JSON, refused above `cap` bytes (413) or when it is not JSON (400)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"the request body has {declared} bytes; the limit is {cap}")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > cap:
            raise ApiError(413, f"the request body is over the limit of {cap} bytes")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class Conversation:
    """One chat completion: a request in the engine, its events brought onto the event loop."""

    def __init__(self, served: Served, chat: Chat, loop):
        self.served, self.chat = served, chat
        self.adapter, self.ids = served.prompt(chat)
        self.events: asyncio.Queue = asyncio.Queue()
        max_tokens = chat.max_tokens or served.default_max_tokens(len(self.ids))
        self.request = Request(self.ids, max_tokens, Sampler(chat.temperature, chat.top_p, chat.seed),
                               lambda kind, value: loop.call_soon_threadsafe(self.events.put_nowait, (kind, value)),
                               adapter=self.adapter, ignore_stop=chat.ignore_eos)
        self.text = TextStream(served.generator.tokenizer, chat.stop)
        self.produced = 0

    async def pieces(self):
        """(text, finish reason or None) as the tokens come; the last one carries the reason."""
        while True:
            kind, value = await self.events.get()
            if kind == "error":
                raise ApiError(500, f"generation failed: {value}", kind="server_error")
            if kind == "done":
                yield self.text.flush(), ("stop" if value in ("stop", "cancelled") else value)
                return
            self.produced += 1
            piece, stopped = self.text.push(value)
            if stopped:
                self.request.cancel()  # the engine drops it within a token
                yield piece, "stop"
                return
            if piece:
                yield piece, None


class Api:
    """The endpoints over one served bundle; `create_app` routes them."""

    def __init__(self, served: Served, api_key: str | None, max_body: int):
        self.served, self.api_key, self.max_body = served, api_key, max_body

    def guarded(self, endpoint: str, handler):
        """The handler behind the API key, its ApiErrors answered as OpenAI does."""
        from starlette.responses import JSONResponse

        def fail(e: ApiError):
            self.served.metrics.request(endpoint, e.status)
            return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

        async def route(request):
            if self.api_key and request.headers.get("authorization", "") != f"Bearer {self.api_key}":
                return fail(ApiError(401, "a valid API key is needed: Authorization: Bearer KEY",
                                     kind="authentication_error", code="invalid_api_key"))
            try:
                return await handler(request)
            except ApiError as e:
                return fail(e)
        return route

    async def chat_completions(self, request):
        from starlette.responses import JSONResponse, StreamingResponse

        served = self.served
        if served.generator is None:
            raise ApiError(404, f"{served.name} is a classifier: use POST /v1/classify")
        chat = parse_chat(await read_json(request, self.max_body), served.models, served.context)
        conversation = Conversation(served, chat, asyncio.get_running_loop())
        try:
            served.engine.submit(conversation.request)
        except QueueFull as e:
            raise ApiError(503, f"the server is busy: {e}; try again shortly", kind="server_busy",
                           headers={"Retry-After": "1"}) from None
        served.metrics.request("chat", 200)
        if chat.stream:
            return StreamingResponse(self.stream(conversation), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return JSONResponse(await self.answer(conversation))

    async def stream(self, conversation: Conversation):
        cid, chat = completion_id(), conversation.chat
        try:
            yield sse(chunk(cid, chat.model, {"role": "assistant", "content": ""}))
            async for piece, reason in conversation.pieces():
                if piece:
                    yield sse(chunk(cid, chat.model, {"content": piece}))
                if reason:
                    yield sse(chunk(cid, chat.model, {}, reason))
            if chat.include_usage:
                yield sse({**chunk(cid, chat.model, {}), "choices": [],
                           "usage": usage(len(conversation.ids), conversation.produced)})
            yield sse("[DONE]")
        except ApiError as e:
            yield sse(e.body())
        finally:  # a client that went away: its generation stops within one token
            self.finished(conversation)

    async def answer(self, conversation: Conversation) -> dict:
        parts, reason = [], "stop"
        try:
            async for piece, done in conversation.pieces():
                parts.append(piece)
                reason = done or reason
        finally:
            self.finished(conversation)
        return completion(completion_id(), conversation.chat.model, "".join(parts), reason, len(conversation.ids),
                          conversation.produced)

    def finished(self, conversation: Conversation) -> None:
        conversation.request.cancel()
        self.served.metrics.tokens(len(conversation.ids), conversation.produced)

    async def classify(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        served = self.served
        if served.classifier is None:
            raise ApiError(404, f"{served.name} is a text generator: use POST /v1/chat/completions")
        body = await read_json(request, self.max_body)
        texts = body.get("input") if isinstance(body, dict) else None
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "'input' must be a string or a non-empty list of strings", "input")
        data = await run_in_threadpool(served.classify, texts)
        served.metrics.request("classify", 200)
        return JSONResponse({"object": "list", "model": served.name, "data": data})

    async def models(self, request):
        from starlette.responses import JSONResponse
        return JSONResponse(model_list(self.served.models))

    async def metrics(self, request):
        from starlette.responses import PlainTextResponse
        return PlainTextResponse(self.served.metrics.text(), media_type=self.served.metrics.content_type)

    async def health(self, request):
        from starlette.responses import JSONResponse
        return JSONResponse({"status": "ok", "model": self.served.name})

    async def page(self, request):
        from starlette.responses import HTMLResponse

        from edgeft.runtime.chat_page import PAGE
        return HTMLResponse(PAGE.replace("{{NAME}}", self.served.name))


def create_app(served: Served, api_key: str | None = None, max_body: int = MAX_BODY):
    from starlette.applications import Starlette
    from starlette.routing import Route

    api = Api(served, api_key, max_body)
    routes = [Route("/v1/chat/completions", api.guarded("chat", api.chat_completions), methods=["POST"]),
              Route("/v1/classify", api.guarded("classify", api.classify), methods=["POST"]),
              Route("/v1/models", api.guarded("models", api.models), methods=["GET"]),
              Route("/metrics", api.guarded("metrics", api.metrics), methods=["GET"]),
              Route("/health", api.health, methods=["GET"]), Route("/", api.page, methods=["GET"])]
    return Starlette(routes=routes, lifespan=served.lifespan)


def serve(bundle: Path, adapters: list[str], host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
          max_queue: int = 64, threads: int | None = None, parallel: int = 8) -> None:
    """Run the server until SIGTERM or Ctrl-C; the requests in flight finish first."""
    try:
        import uvicorn
    except ImportError:
        raise EdgeftError("serve needs the server extra: pip install 'edgeft-runtime[serve]'") from None
    if host not in LOOPBACK and not api_key:
        raise EdgeftError(f"--host {host} opens the server beyond this machine: give --api-key KEY (clients send "
                          "Authorization: Bearer KEY), or bind 127.0.0.1")
    served = Served.load(bundle, adapters, threads, parallel, max_queue)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it found:
    # a handler that does nothing makes a finished shutdown a clean exit (code 0)
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(create_app(served, api_key), host=host, port=port, log_level="warning", timeout_graceful_shutdown=None)


__all__ = ["Engine", "create_app", "serve"]
