"""What the server serves: a bundle loaded once (a generator with its engine, or a classifier), the
names an app can ask for (the model, and each adapter of an unmerged base), and the Prometheus
metrics of the serving (prometheus-client's own registry and text format)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeft.runtime.engine import Engine, check_prompt
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import GENAI_CONFIG_FILE
from edgeft.runtime.manifest import read_manifest
from edgeft.runtime.onnx import read_json
from edgeft.runtime.openai_api import ApiError, Chat

DEFAULT_MAX_TOKENS = 512  # an answer's length when the request sets none and the model states no context


class Metrics:
    """Requests, errors, tokens, the queue and the conversations in hand, time to first token and per
    token, the decode batch: what an operator graphs."""

    def __init__(self, engine: Engine | None):
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no `_created` series beside every counter
        r = self.registry = CollectorRegistry()
        self.content_type = CONTENT_TYPE_LATEST
        self.requests = Counter("edgeft_requests", "HTTP requests, by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.errors = Counter("edgeft_request_errors", "requests answered with an error, by endpoint and status",
                              ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("edgeft_prompt_tokens", "prompt tokens of the chat completions", registry=r)
        self.completion_tokens = Counter("edgeft_completion_tokens", "tokens generated", registry=r)
        self.finished = Counter("edgeft_finished", "conversations ended, by reason (stop, length, cancelled: the client "
                                "went away or a stop string ended it, error)", ["reason"], registry=r)
        Gauge("edgeft_queue_depth", "requests waiting for the engine", registry=r).set_function(
            lambda: engine.queued if engine else 0)
        Gauge("edgeft_active_conversations", "conversations being decoded", registry=r).set_function(
            lambda: engine.active if engine else 0)
        self.ttft = Histogram("edgeft_time_to_first_token_seconds", "from the request's arrival to its first token",
                              buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.per_token = Histogram("edgeft_time_per_output_token_seconds", "one decode step (every conversation in "
                                   "the batch gets a token)", buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
                                   registry=r)
        self.batch = Histogram("edgeft_decode_batch_size", "conversations decoded in one model call",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)

    def observe(self, event: str, value) -> None:
        """The engine's events (called on its thread)."""
        if event == "ttft":
            self.ttft.observe(value)
        elif event == "step":
            self.per_token.observe(value[0])
            self.batch.observe(value[1])
        elif event == "finished":
            self.finished.labels(value).inc()

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


@dataclass
class Served:
    name: str
    models: list[str]  # what a request's "model" may name: the model itself first, then each adapter
    generator: object = None
    classifier: object = None
    engine: Engine | None = None
    context: int | None = None
    metrics: Metrics | None = None

    @classmethod
    def load(cls, bundle: Path, adapters: list[str], threads: int | None, parallel: int, max_queue: int) -> "Served":
        """The bundle, checked (sha256 of every file, the tokenizer), with its adapter bundles: an adapter
        made for another base is refused here, before the server starts."""
        from edgeft.runtime import load

        bundle = Path(bundle)
        manifest = read_manifest(bundle, what="bundle")
        name = manifest.config.get("recipe", {}).get("name") or bundle.name
        model = load(bundle, threads)
        if manifest.task != "generation":
            if adapters:
                raise EdgeftError(f"{bundle} is a classifier: adapters are for an unmerged text generator")
            return cls(name, [name], classifier=model, metrics=Metrics(None))
        added = [model.add_adapter(Path(a)) if Path(a).is_dir() else model.adapters.resolve(a) for a in adapters] \
            if adapters else []
        names = [name, *dict.fromkeys([*(model.adapters.loaded if model.adapters else []), *added])]
        config = bundle / GENAI_CONFIG_FILE
        context = read_json(config, "the builder's settings")["model"].get("context_length") if config.is_file() else None
        engine = Engine(model, slots=parallel, max_queue=max_queue, context=context)
        served = cls(name, list(dict.fromkeys(names)), generator=model, engine=engine, context=context)
        served.metrics = Metrics(engine)
        engine.observe = served.metrics.observe
        return served

    def prompt(self, chat: Chat) -> tuple[str | None, list[int]]:
        """The adapter the request names (its model) and its prompt's token ids, checked against the context."""
        g = self.generator
        adapter = None if not g.adapters else g.adapters.resolve(None if chat.model == self.name else chat.model)
        ids = g.encode_chat(chat.messages, adapter)
        try:
            check_prompt(ids, chat.max_tokens or 1, self.context)
        except EdgeftError as e:
            raise ApiError(400, str(e), "messages", code="context_length_exceeded") from None
        return adapter, ids

    def default_max_tokens(self, prompt_tokens: int) -> int:
        """An answer's length when the request sets none: the model's own (generation.json), within its context."""
        own = self.generator.settings.get("max_new_tokens") or DEFAULT_MAX_TOKENS
        return min(own, self.context - prompt_tokens) if self.context else own

    def classify(self, texts: list[str]) -> list[dict]:
        """One text per model call, as the bench scores them (int8-dynamic scales activations per batch)."""
        logits = np.concatenate([self.classifier.logits(self.classifier.encode([t])) for t in texts])
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = self.classifier.labels
        return [{"index": i, "label": labels[int(p.argmax())], "probabilities": {lab: round(float(x), 6)
                                                                                for lab, x in zip(labels, p)}}
                for i, p in enumerate(probs)]

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        if self.engine:
            self.engine.start()
        yield
        if self.engine:
            self.engine.stop()
