"""`edgeft-runtime serve`: the OpenAI-compatible server, run as a real process on a free loopback
port with the tiny models' bundles, and talked to as an app would: the real `openai` client, plain
HTTP from 32 threads at once, a headless Chromium on its chat page, a client that hangs up, SIGTERM."""
from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from cdp import CHROMIUM, Browser

from bench.sshd import free_port
from edgeft.runtime import Generator
from edgeft.stages.package import package, package_adapter

QUESTION = [{"role": "user", "content": "Where is Kyoto ?"}]


class Server:
    def __init__(self, bundle, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeft.runtime", "serve", str(bundle), "--port",
                                      str(self.port), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("the server did not answer /health")

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 60):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        text = raw.decode()
        return response.status, dict(response.getheaders()), (json.loads(text) if text.startswith("{") else text)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, body, **kw):
        return self.request("POST", path, body, **kw)

    def metric(self, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", self.get("/metrics")[2], re.M)
        return float(match[1]) if match else 0.0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def chat(messages=QUESTION, **fields):
    return {"messages": messages, "temperature": 0, **fields}


def stream_events(text: str) -> list:
    return [e[len("data: "):] for e in text.split("\n\n") if e.startswith("data: ")]


@pytest.fixture(scope="module")
def gen_server(gen_run):
    run_dir, recipe, _ = gen_run
    server = Server(run_dir / "package", "--parallel", "4")
    yield server, run_dir / "package", recipe.name
    server.stop()


@pytest.fixture(scope="module")
def skill_bundles(skills, tmp_path_factory):
    """The routing skill's unmerged base (with its own adapter), and the spam skill as an adapter bundle."""
    _, made = skills
    out = tmp_path_factory.mktemp("skill-bundles")
    (routing, run_r), (spam, run_s) = made["routing"], made["spam"]
    package(routing, run_r / "quantize/int4u", out / "base")
    package_adapter(spam, run_s / "quantize/int4u", out / "spam")
    return out / "base", out / "spam"


def test_the_openai_client_gets_the_runtimes_answer_streamed_and_not(gen_server):
    from openai import OpenAI

    server, bundle, name = gen_server
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [name]
    expected = Generator(bundle, verify=False).answer(QUESTION, 8)
    reply = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content.strip() == expected and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 8
    pieces, reasons = [], []
    for chunk in client.chat.completions.create(model=name, messages=QUESTION, max_tokens=8, temperature=0, stream=True):
        pieces.append(chunk.choices[0].delta.content or "")
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == reply.choices[0].message.content and reasons[-1] == reply.choices[0].finish_reason
    # sampling: the same seed, the same answer
    sampled = [client.chat.completions.create(model=name, messages=QUESTION, max_tokens=8, temperature=1.0, top_p=0.9,
                                              seed=7).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_a_stream_is_openais_event_stream_ending_with_done_and_usage(gen_server):
    server, _, _ = gen_server
    status, headers, text = server.post("/v1/chat/completions", chat(max_tokens=5, stream=True,
                                                                     stream_options={"include_usage": True}))
    events = stream_events(text)
    assert status == 200 and headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("body, status, message, param", [
    (b"{not json", 400, "the request body is not valid JSON", None),
    (chat(temperature="hot"), 400, "'temperature' must be a number, not str", "temperature"),
    (chat(messages="hi"), 400, "'messages' must be a list of {role, content} objects", "messages"),
    (chat(messages=[]), 400, "'messages' is empty", "messages"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), 400, "'messages[0].role' must be one of", "messages[0].role"),
    (chat(model="no-such-model"), 404, "The model 'no-such-model' does not exist", "model"),
    (chat(max_tokens=0), 400, "'max_tokens' must be between 1 and 256; got 0", "max_tokens"),
    (chat(max_tokens=100000), 400, "'max_tokens' must be between 1 and 256; got 100000", "max_tokens"),
    (chat(messages=[{"role": "user", "content": "where is it ? " * 200}]), 400,
     "tokens; the model's context is 256 tokens", "messages"),
    (b"{" + b" " * (1 << 20) + b"}", 413, "the request body has", None),
])
def test_bad_input_gets_a_4xx_with_an_openai_error_naming_the_field(gen_server, body, status, message, param):
    server, _, _ = gen_server
    got, _, reply = server.post("/v1/chat/completions", body)
    assert got == status and message in reply["error"]["message"] and reply["error"]["param"] == param
    assert reply["error"]["type"] == "invalid_request_error"
    if "context" in message:
        assert re.search(r"the prompt has \d+ tokens", reply["error"]["message"])


def test_two_adapters_on_one_base_answer_as_each_does_alone_in_interleaved_requests(skill_bundles):
    base, spam = skill_bundles
    server = Server(base, "--adapter", spam, "--parallel", "4")
    try:
        models = [m["id"] for m in server.get("/v1/models")[2]["data"]]
        assert models == ["routing", "spam"]
        alone = Generator(base, verify=False)
        alone.add_adapter(spam)
        questions = [[{"role": "user", "content": q}] for q in ("Where is Kyoto ?", "WIN a FREE prize now", "Who ?")]
        expected = {(i, m): alone.answer(q, 6, adapter=m) for i, q in enumerate(questions) for m in models}
        got, threads = {}, []
        for i, q in enumerate(questions):  # both adapters' requests at once, interleaved
            for m in models:
                def ask(i=i, q=q, m=m):
                    got[(i, m)] = server.post("/v1/chat/completions", chat(q, model=m, max_tokens=6))[2]
                threads.append(threading.Thread(target=ask))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert {k: v["choices"][0]["message"]["content"].strip() for k, v in got.items()} == expected
        assert any(expected[(i, "routing")] != expected[(i, "spam")] for i in range(len(questions)))
    finally:
        assert server.stop() == 0


def test_an_adapter_made_for_another_base_is_refused_before_the_server_starts(skill_bundles, skills, tmp_path):
    from conftest import skill_recipe

    from edgeft.stages.quantize import quantize_variant

    base, _ = skill_bundles
    tiny_base, made = skills
    other = skill_recipe(tiny_base, "spam", block_size=64)
    quantize_variant(other, made["spam"][1] / "export-genai", other.quantize.variants[0], tmp_path / "int4u-64")
    package_adapter(other, tmp_path / "int4u-64", tmp_path / "spam-64")
    done = subprocess.run([sys.executable, "-m", "edgeft.runtime", "serve", str(base), "--adapter", str(tmp_path / "spam-64"),
                           "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "was made for the base with sha256" in done.stderr


def test_32_concurrent_streaming_clients_all_complete_batched_or_refused_with_retry_after(gen_run):
    run_dir, _, _ = gen_run
    for parallel, queue in ((4, 64), (1, 1)):
        server = Server(run_dir / "package", "--parallel", parallel, "--max-queue", queue)
        results = []

        def client():
            results.append(server.post("/v1/chat/completions", chat(max_tokens=48, stream=True), timeout=120))
        threads = [threading.Thread(target=client) for _ in range(32)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert time.monotonic() - start < 120 and len(results) == 32
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 503}, statuses
        for status, headers, body in results:
            if status == 200:
                assert stream_events(body)[-1] == "[DONE]" and '"finish_reason": "length"' in body
            else:
                assert headers["retry-after"] == "1" and "the server is busy" in body["error"]["message"]
        if queue == 64:
            assert statuses.count(200) == 32
            assert server.metric('edgeft_decode_batch_size_bucket{le="1.0"}') < server.metric("edgeft_decode_batch_size_count")
        else:
            assert statuses.count(503) >= 1 and statuses.count(200) >= 2
        assert server.stop() == 0


def test_a_client_that_hangs_up_stops_its_generation(gen_server):
    server, _, _ = gen_server
    before = server.metric("edgeft_completion_tokens_total")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/v1/chat/completions", json.dumps(chat(max_tokens=200, stream=True)).encode(),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read1(200)  # the first events, then the client goes away (close alone waits for the response's file)
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    deadline = time.monotonic() + 10
    while server.metric('edgeft_finished_total{reason="cancelled"}') < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric('edgeft_finished_total{reason="cancelled"}') >= 1
    assert server.metric("edgeft_completion_tokens_total") - before < 200
    assert server.metric("edgeft_active_conversations") == 0


def test_sigterm_lets_the_request_in_flight_finish(gen_run):
    run_dir, _, _ = gen_run
    server = Server(run_dir / "package")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("POST", "/v1/chat/completions", json.dumps(chat(max_tokens=150, stream=True)).encode(),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    first = response.read1(100)
    server.proc.send_signal(signal.SIGTERM)
    rest = response.read()
    events = stream_events((first + rest).decode())
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert sum('"content": "' in e and '"role"' not in e for e in events) > 1
    assert server.proc.wait(timeout=60) == 0


def test_auth_and_binding_beyond_loopback(gen_run):
    run_dir, _, _ = gen_run
    refused = subprocess.run([sys.executable, "-m", "edgeft.runtime", "serve", str(run_dir / "package"), "--host",
                              "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--host 0.0.0.0 opens the server beyond this machine: give --api-key" in refused.stderr
    server = Server(run_dir / "package", "--api-key", "s3cret")
    try:
        status, _, reply = server.post("/v1/chat/completions", chat(max_tokens=2))
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        assert server.post("/v1/chat/completions", chat(max_tokens=2), headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert server.get("/metrics")[0] == 401 and server.get("/health")[0] == 200
    finally:
        server.stop()


def test_a_classifier_bundle_classifies_as_the_runtime_does(cls_run):
    from edgeft.runtime import Classifier

    bundle = cls_run[0] / "package"
    server = Server(bundle)
    try:
        texts = ["WINNER!! Claim your FREE prize now", "see you at lunch"]
        status, _, reply = server.post("/v1/classify", {"input": texts})
        assert status == 200 and [d["label"] for d in reply["data"]] == [l for l, _ in Classifier(bundle).predict(texts)]
        assert all(abs(sum(d["probabilities"].values()) - 1) < 1e-4 for d in reply["data"])
        assert server.post("/v1/classify", {"input": []})[0] == 400
        assert server.post("/v1/chat/completions", chat())[2]["error"]["message"].endswith("use POST /v1/classify")
    finally:
        server.stop()


def test_the_chat_page_streams_an_answer_in_a_real_browser(skill_bundles):
    assert CHROMIUM, ".ci/run installs Debian's chromium"
    base, spam = skill_bundles
    server = Server(base, "--adapter", spam)
    browser = Browser()
    try:
        browser.open(server.url + "/")
        options = browser.wait_for("document.getElementById('model').options.length == 2 && "
                                   "[...document.getElementById('model').options].map(o => o.value)")
        assert options == ["routing", "spam"]
        browser.js("document.getElementById('model').value = 'spam'")
        browser.js("document.getElementById('text').value = 'WIN a FREE prize now'; "
                   "document.getElementById('ask').requestSubmit()")
        said = browser.wait_for("document.querySelectorAll('.msg.assistant').length && !document.getElementById('log')"
                                ".dataset.busy && document.querySelector('.msg.assistant').textContent")
        alone = Generator(base, verify=False)
        alone.add_adapter(spam)
        expected = alone.answer([{"role": "user", "content": "WIN a FREE prize now"}], adapter="spam")
        assert said.strip() == expected  # the whole stream, as the runtime answers alone
    finally:
        browser.close()
        server.stop()
