"""The device side, with real components: the runtime wheel alone in a fresh venv (no torch, no
transformers), and `edgeft bench --on` through a real OpenSSH server on 127.0.0.1 (tests/sshd.py),
with the failures a real link has: a wrong port, no python3 there, a connection cut mid-copy, a
full disk."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.sshd import LocalSshd, free_port
from edgeft.core.artifacts import read_manifest, write_manifest
from edgeft.stages.package import package

HEAVY = ("torch", "transformers", "peft", "optimum", "bitsandbytes")
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def bundles(cls_run, gen_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles")
    (cls_dir, cls_recipe, cls_report), (gen_dir, gen_recipe, gen_report) = cls_run, gen_run
    package(cls_recipe, cls_dir / "quantize/int8-dynamic", folder / "sms", bench_dir=cls_dir / "bench")
    package(gen_recipe, gen_dir / "quantize/int4", folder / "trec", bench_dir=gen_dir / "bench")
    return {"cls": folder / "sms", "gen": folder / "trec",
            "cls_scored": next(v for v in cls_report["variants"] if v["name"] == "int8-dynamic"),
            "gen_scored": next(v for v in gen_report["variants"] if v["name"] == "int4")}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with LocalSshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def edgeft(*args, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "edgeft.cli", *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert done.returncode == check_rc, done.stderr + done.stdout
    return done


def bench_on(bundle: Path, prefix: str, remote: Path, out: Path, *extra, check_rc: int | None = 0):
    return edgeft("bench", bundle, "--on", prefix, "--remote-dir", remote, "-o", out, "--rounds", 1, "--cold-rounds", 1,
                  *extra, check_rc=check_rc)


@pytest.fixture(scope="module")
def device(bundles, sshd, tmp_path_factory):
    """The classifier bundle benched on the "device" with --install: its venv is the runtime-only install."""
    remote, out = tmp_path_factory.mktemp("device"), tmp_path_factory.mktemp("device-bench") / "report"
    first = bench_on(bundles["cls"], sshd.prefix(), remote, out, "--install")
    return {"remote": remote, "out": out, "first": first, "venv": next(remote.glob("venv-*"))}


def test_bench_on_a_device_over_ssh_matches_the_local_accuracy_exactly(bundles, device):
    assert "copied" in device["first"].stderr and "installed edgeft_runtime-0.1.0-py3-none-any.whl" in device["first"].stderr
    report = json.loads((device["out"] / "report.json").read_text())
    host, there = report["variants"]
    assert (host["where"], there["where"]) == ("host", "device")
    assert there["metrics"] == host["metrics"] and there["predictions"] == host["predictions"]
    assert there["metrics"]["accuracy"] > 0.5 and len(there["predictions"]) == report["test_examples"] > 0
    # the device reports itself; this one is this machine, behind ssh
    assert there["machine"]["cpus"] >= 1 and there["machine"]["cpu"] and there["machine"]["os"]
    assert there["versions"]["edgeft-runtime"] == "0.1.0" and "torch" not in there["versions"]
    assert there["latency"][0]["p50_ms"] > 0 and there["cold_start"]["first_result_s"]["median"] > 0
    # the copy on the device is complete and checks against its manifest
    copies = [p for p in (device["remote"] / "bundles").iterdir()]
    assert len(copies) == 1 and read_manifest(copies[0], stage="package").variant == "int8-dynamic"
    assert "device" in (device["out"] / "report.md").read_text()
    # the ledger's device step: the same eval examples there and here, recomputed from the predictions
    last = report["ledger"]["steps"][-1]
    same = sum(a == b for a, b in zip(host["predictions"], there["predictions"])) / len(there["predictions"])
    assert last["previous"] == host["name"] and last["agreement"] == same == 1.0 and last["change_pts"] == 0
    assert "on the device" in last["step"] and "<h2>Accuracy ledger</h2>" in (device["out"] / "report.html").read_text()


def test_a_second_call_skips_the_copy_and_the_install(bundles, sshd, device, tmp_path):
    again = bench_on(bundles["cls"], sshd.prefix(), device["remote"], tmp_path / "again", "--install", "--no-host")
    assert "already holds this bundle" in again.stderr and "copy skipped" in again.stderr
    assert "already installed" in again.stderr and "copied" not in again.stderr
    assert [r["where"] for r in json.loads((tmp_path / "again/report.json").read_text())["variants"]] == ["device"]


def test_the_runtime_wheel_alone_runs_predict_chat_bench_and_verify(bundles, device, tmp_path):
    venv = device["venv"]
    python, cli = venv / "bin/python", venv / "bin/edgeft-runtime"
    for module in HEAVY:
        missing = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
        assert missing.returncode == 1 and f"No module named '{module}'" in missing.stderr
    installed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"edgeft-runtime", "onnxruntime", "tokenizers", "numpy"} <= names and not names & set(HEAVY)

    cls = bundles["cls"]
    said = subprocess.run([cli, "predict", cls, "--input", cls / "eval.jsonl", "--json"], capture_output=True, text=True)
    labels = [json.loads(line)["label"] for line in said.stdout.splitlines()]
    assert said.returncode == 0 and labels == bundles["cls_scored"]["predictions"][:len(labels)] and labels

    gen = bundles["gen"]
    bench = subprocess.run([cli, "bench", gen, "--json", "--rounds", "1", "--cold-rounds", "1"], capture_output=True,
                           text=True)
    row = json.loads(bench.stdout)["variants"][0]
    assert row["predictions"] == bundles["gen_scored"]["predictions"][:len(row["predictions"])]
    assert row["decode"][0]["decode_tokens_per_s"]["median"] > 0 and row["peak_rss_bytes"]
    # the int4 bundle carries an fp32-compute prompt graph, which only AVX-512 CPUs take
    from edgeft.runtime.machine import cpu_flags
    assert (gen / "model.prefill.avx512.onnx").exists()
    assert row["prompt_graph_file"] == ("model.prefill.avx512.onnx" if "avx512f" in cpu_flags() else "model.onnx")

    chat = subprocess.run([cli, "chat", gen, "--max-new-tokens", "6"], input="Who wrote Hamlet ?\n\n",
                          capture_output=True, text=True)
    from edgeft.runtime import load
    expected = "".join(load(gen).stream("Who wrote Hamlet ?", max_new_tokens=6))
    assert chat.returncode == 0 and chat.stdout == f"> {expected}\n> "

    # verify on the device refuses a tokenizer.json with one merge removed, naming the text
    edited = tmp_path / "edited"
    subprocess.run(["cp", "-r", gen, edited], check=True)
    tokenizer = json.loads((edited / "tokenizer.json").read_text())
    merges = tokenizer["model"]["merges"]
    del merges[next(i for i, m in enumerate(merges) if (m if isinstance(m, str) else " ".join(m)) == "Ġ t")]
    (edited / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    write_manifest(edited, stage="package", task="generation", inputs=[], config=read_manifest(edited, verify=False).config)
    refused = subprocess.run([cli, "verify", edited], capture_output=True, text=True)
    assert refused.returncode == 2 and "tokenizes" in refused.stderr
    assert "differently than when the bundle was made" in refused.stderr
    assert subprocess.run([cli, "verify", gen], capture_output=True, text=True).returncode == 0


def test_a_wrong_port_is_one_clear_error(bundles, sshd, tmp_path):
    port = free_port()
    failed = bench_on(bundles["cls"], sshd.prefix(port=port), tmp_path / "remote", tmp_path / "out", check_rc=2)
    assert f"cannot reach the device with `ssh -p {port}" in failed.stderr and "Connection refused" in failed.stderr
    assert not (tmp_path / "remote").exists() and not (tmp_path / "out").exists()


def test_a_device_without_python3_is_one_clear_error(bundles, sshd, tmp_path):
    path = tmp_path / "bin"  # a shell and nothing else on the device's PATH
    path.mkdir()
    (path / "sh").symlink_to("/bin/sh")
    # HOME too: the login shell's startup files (pyenv's, here) would put python3 back on the PATH
    key = sshd.add_key("no_python", f'environment="PATH={path}",environment="HOME={tmp_path}"')
    failed = bench_on(bundles["cls"], sshd.prefix(key=key), tmp_path / "remote", tmp_path / "out", check_rc=2)
    assert "no python3 on the device: install Python 3.10 or newer there" in failed.stderr
    assert not (tmp_path / "remote").exists() and not (tmp_path / "out").exists()


def test_a_transfer_cut_mid_way_leaves_nothing_on_the_device(bundles, sshd, tmp_path):
    remote = tmp_path / "remote"
    cutter = f"{sys.executable} {TESTS / 'cut_connection.py'} 200000 {sshd.prefix()}"
    failed = bench_on(bundles["cls"], cutter, remote, tmp_path / "out", check_rc=2)
    assert "was cut before it completed" in failed.stderr and "the device keeps nothing of it" in failed.stderr
    deadline = time.time() + 15  # the device notices the lost link and its trap cleans up
    while list((remote / "bundles").iterdir()) and time.time() < deadline:
        time.sleep(0.2)
    assert list((remote / "bundles").iterdir()) == [] and not (tmp_path / "out").exists()


def test_a_full_disk_is_refused_before_copying(bundles, sshd, tmp_path):
    remote = tmp_path / "small"
    remote.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(remote)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        failed = bench_on(bundles["cls"], sshd.prefix(), remote, tmp_path / "out", check_rc=2)
        assert "MiB free in" in failed.stderr and "the bundle needs" in failed.stderr
        assert list((remote / "bundles").iterdir()) == []
    finally:
        subprocess.run(["umount", str(remote)], check=True)


def test_a_prefix_that_passes_arguments_as_they_are(bundles, tmp_path):
    """docker exec -i NAME, kubectl exec -i POD --: the script goes as `sh -c SCRIPT`, unquoted;
    `env` is such a prefix for this very machine, with the runtime of this environment."""
    out = tmp_path / "out"
    done = bench_on(bundles["cls"], "env", tmp_path / "remote", out, "--python", sys.executable, "--no-host")
    row = json.loads((out / "report.json").read_text())["variants"][0]
    assert "copied" in done.stderr and row["where"] == "device" and row["predictions"]
    assert row["predictions"] == bundles["cls_scored"]["predictions"][:len(row["predictions"])]
