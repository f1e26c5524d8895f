"""edgeft's server against llama.cpp's own server under load, on the same fine-tune and machine.

    python -m bench.serve_load BUNDLE [GGUF --llama-server PATH] [--clients 1 4 16] [--threads 2] [--rounds 3]

BUNDLE is an edgeft generator bundle (`edgeft-runtime serve` serves it), GGUF llama.cpp's Q4_0 of the
same merged model (the vs-llamacpp recipe makes both; `edgeft llamacpp-setup --tools llama-server`
builds llama-server from the same sources as the gguf backend). For each number of concurrent
clients, each server is started afresh (llama-server with `-np` that number of slots, edgeft with
`--parallel` the same), and every client streams chat completions one after another: the bundle's
held-out questions, greedy, `max_tokens` tokens each with end-of-turn ignored (llama.cpp's
`ignore_eos`, which both servers take), so that both generate the same number of tokens. The servers
and client counts are interleaved round by round; medians with min-max over rounds.

Measured at the client, as an app sees it: requests/s, time to first token (p50, p99 over every
request of a round), aggregate decode tokens/s (completion tokens of all clients over the wall time),
and the server process's peak RSS. Without GGUF and --llama-server, edgeft's server alone (a smoke run).
Writes bench/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import RESULTS, write_result
from bench.sshd import free_port
from edgeft.runtime.device_bench import eval_rows


def start(kind: str, args, clients: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if kind == "edgeft":
        cmd = [sys.executable, "-m", "edgeft.runtime", "serve", str(args.bundle), "--port", str(port), "--threads",
               str(args.threads), "--parallel", str(clients), "--max-queue", "1024"]
    else:
        cmd = [str(args.llama_server), "-m", str(args.gguf), "--port", str(port), "-t", str(args.threads), "-tb",
               str(args.threads), "-np", str(clients), "-c", str(args.context * clients), "--no-webui", "-lv", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{kind} did not start: {' '.join(cmd)}")


def stream(port: int, messages: list[dict], max_tokens: int) -> dict:
    """One streamed chat completion: seconds to the first token, tokens, seconds in all."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    first, tokens, buffer = None, 0, b""
    while chunk := response.read1(65536):
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = event.decode().removeprefix("data: ")
            if data == "[DONE]" or not data.startswith("{"):
                continue
            reply = json.loads(data)
            if reply.get("usage"):
                tokens = reply["usage"]["completion_tokens"]
            delta = (reply.get("choices") or [{}])[0].get("delta", {})
            if first is None and delta.get("content"):
                first = time.perf_counter() - start
    connection.close()
    return {"ttft_s": first or float("nan"), "tokens": tokens, "seconds": time.perf_counter() - start,
            "status": response.status}


def load(port: int, clients: int, per_client: int, questions: list[list[dict]], max_tokens: int) -> dict:
    """`clients` threads, each streaming `per_client` requests one after another."""
    done: list[dict] = []

    def client(c: int):
        for r in range(per_client):
            done.append(stream(port, questions[(c * per_client + r) % len(questions)], max_tokens))
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttft = sorted(d["ttft_s"] for d in done)
    return {"requests": len(done), "failed": sum(d["status"] != 200 for d in done), "wall_s": wall,
            "requests_per_s": len(done) / wall, "tokens_per_s": sum(d["tokens"] for d in done) / wall,
            "ttft_p50_ms": 1000 * statistics.median(ttft), "ttft_p99_ms": 1000 * ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))],
            "ttft_max_ms": 1000 * ttft[-1], "tokens": sum(d["tokens"] for d in done)}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def servers(args) -> tuple[str, ...]:
    return ("edgeft", "llama-server") if args.llama_server else ("edgeft",)


def one_round(args, questions: list[list[dict]]) -> dict:
    results = {}
    for clients in args.clients:
        for kind in servers(args):
            proc, port = start(kind, args, clients)
            try:
                stream(port, questions[0], 4)  # warm-up
                measured = load(port, clients, args.requests_per_client, questions, args.max_tokens)
                measured["peak_rss_mib"] = peak_rss_mib(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            results[f"{kind}@{clients}"] = measured
            print(f"{kind:12} {clients:3} clients: {measured['tokens_per_s']:7.1f} tok/s, TTFT p50 "
                  f"{measured['ttft_p50_ms']:.0f} ms, p99 {measured['ttft_p99_ms']:.0f} ms", flush=True)
    return results


def summarize(rounds: list[dict], clients: list[int], kinds: tuple[str, ...]) -> dict:
    keys = ("requests_per_s", "tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "ttft_max_ms", "peak_rss_mib")
    out = {}
    for c in clients:
        for kind in kinds:
            runs = [r[f"{kind}@{c}"] for r in rounds]
            out.setdefault(str(c), {})[kind] = {k: {"median": statistics.median(x[k] for x in runs),
                                                    "min": min(x[k] for x in runs), "max": max(x[k] for x in runs)}
                                                for k in keys}
            out[str(c)][kind]["failed"] = sum(x["failed"] for x in runs)
        if "llama-server" not in kinds:
            continue
        ratios = [r[f"edgeft@{c}"]["tokens_per_s"] / r[f"llama-server@{c}"]["tokens_per_s"] for r in rounds]
        out[str(c)]["tokens_per_s_ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="an edgeft generator bundle")
    parser.add_argument("gguf", type=Path, nargs="?", help="llama.cpp's GGUF of the same fine-tune (Q4_0)")
    parser.add_argument("--llama-server", type=Path, default=None,
                        help="llama.cpp's llama-server binary (edgeft llamacpp-setup --tools llama-server)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=512, help="llama-server's context per slot")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args(argv)
    if bool(args.gguf) != bool(args.llama_server):
        parser.error("llama-server needs both GGUF and --llama-server")
    questions = [r["messages"][:-1] for r in eval_rows(args.bundle)]
    rounds = [one_round(args, questions) for _ in range(args.rounds)]
    version = subprocess.run([str(args.llama_server), "--version"], capture_output=True, text=True) \
        if args.llama_server else None
    return write_result(args.out, "serve_load", argv, {
        "bundle": str(args.bundle), "gguf": str(args.gguf) if args.gguf else None, "clients": args.clients,
        "threads": args.threads, "rounds": args.rounds, "requests_per_client": args.requests_per_client,
        "max_tokens": args.max_tokens,
        "llama_server": (version.stdout + version.stderr).strip().splitlines()[-2:] if version else None,
        "summary": summarize(rounds, args.clients, servers(args)), "rounds_raw": rounds})


if __name__ == "__main__":
    main()
