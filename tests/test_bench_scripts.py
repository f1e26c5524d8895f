"""Every benchmark in bench/ as a module, run end to end on the tiny models: one round, a few
examples, the JSON read back with its provenance (commit, command, machine, versions). The numbers
themselves mean nothing at this size; what is checked is that each benchmark runs, compares what it
says it compares, and records where it ran."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from edgeft.core.artifacts import source_commit


def provenance_ok(result: dict, out, benchmark: str) -> None:
    assert json.loads(out.read_text()) == result  # what main() returns is what it wrote
    assert result["benchmark"] == benchmark and result["command"].startswith(f"python -m bench.{benchmark}")
    assert result["commit"] == source_commit() and result["machine"]["cpu"] and result["versions"]["onnxruntime"]


def test_cli_startup(tmp_path):
    from bench import cli_startup

    out = tmp_path / "cli.json"
    result = cli_startup.main(["--rounds", "1", "--out", str(out)])
    provenance_ok(result, out, "cli_startup")
    times = {name: r["median_ms"] for name, r in result["results"].items()}
    assert set(times) == {"python -c pass", "edgeft --help", "edgeft run --help"}
    assert 0 < times["python -c pass"] < times["edgeft --help"]


def test_cold_start(cls_run, gen_run, tmp_path):
    from bench import cold_start

    out = tmp_path / "cold.json"
    result = cold_start.main([str(cls_run[0]), str(gen_run[0]), "--rounds", "1", "--out", str(out)])
    provenance_ok(result, out, "cold_start")
    for task in ("classification", "generation"):
        rows = result["results"][task]["rows"]
        assert set(rows) == {"edgeft-runtime", "transformers", "optimum"}
        assert not rows["edgeft-runtime"]["torch_loaded"] and rows["transformers"]["torch_loaded"]
        assert rows["edgeft-runtime"]["peak_rss_mib"] < rows["transformers"]["peak_rss_mib"]
    assert result["results"]["generation"]["optimum_loads"].endswith("quantize/int4-optimum")


def test_compare_optimum(cls_run, tmp_path):
    from bench import compare_optimum

    out = tmp_path / "optimum.json"
    result = compare_optimum.main([str(cls_run[0]), "--rounds", "1", "--calls", "5", "--out", str(out)])
    provenance_ok(result, out, "compare_optimum")
    models = {r["model"] for r in result["results"]}
    assert {"pytorch-fp32", "optimum-int8", "edgeft-int8"} <= models
    assert all(r["p50_ms"] > 0 and 0 <= r["accuracy"] <= 1 for r in result["results"])
    assert "optimum-int8@1t" in result["ratios"]


def test_compare_llamacpp(gen_run, tmp_path):
    if os.environ.get("EDGEFT_REQUIRE_GGUF") != "1":
        pytest.importorskip("llama_cpp", reason="the gguf extra (edgeft llamacpp-setup) is not installed")
    from bench import compare_llamacpp

    out = tmp_path / "llamacpp.json"
    result = compare_llamacpp.main([str(gen_run[0]), "--questions", "4", "--rounds", "1", "--threads", "1",
                                    "--prompt-tokens", "32", "--new-tokens", "8", "--out", str(out)])
    provenance_ok(result, out, "compare_llamacpp")
    models = result["models"]
    assert {"edgeft fp32", "edgeft int4", "llama.cpp Q4_0", "llama.cpp Q4_K_M"} <= set(models)
    assert models["edgeft int4"]["speed"]["1"]["decode_tokens_per_s"]["median"] > 0
    assert models["llama.cpp Q4_0"]["speed"]["1"]["prefill_tokens_per_s"]["median"] > 0
    assert result["questions"] == 4 and result["verdict"]["best_q4_k_m"] == "llama.cpp Q4_K_M"


def test_int4_retention(gen_run, tmp_path):
    from bench import int4_retention

    out = tmp_path / "retention.json"
    today = "int4 today (genai builder RTN, acc 4, int8 head)"
    result = int4_retention.main([str(gen_run[0]), "--only", today, "--threads", "1", "--rounds", "1",
                                  "--prompt-tokens", "32", "--new-tokens", "8", "--questions", "6", "--out", str(out)])
    provenance_ok(result, out, "int4_retention")
    reference = result["candidates"][result["reference"]]
    assert reference["retention"] == (1.0 if reference["exact_match"] else None) and result["questions"] == 6
    assert result["candidates"][today]["decode_tokens_per_s"]["median"] > 0


def test_adapters(skills, tmp_path):
    from bench import adapters

    _, made = skills
    out = tmp_path / "adapters.json"
    result = adapters.main([str(made["routing"][1]), str(made["spam"][1]), "--variant", "int4u", "--questions", "4",
                            "--switches", "3", "--out", str(out)])
    provenance_ok(result, out, "adapters")
    assert set(result["quality"]) == {"routing", "spam"} and set(result["adapter_bundle_mib"]) == {"routing", "spam"}
    assert result["quality"]["spam"]["examples"] == 4 and result["switching"]["switches"] == 3
    assert result["peak_rss_mib"]["two_adapters"] > 0 and result["peak_rss_mib"]["one_adapter"] > 0


def test_serve_load_edgeft_alone(gen_run, tmp_path):
    """The llama-server side needs llama.cpp's programs (edgeft llamacpp-setup --tools llama-server), built
    for the real measurement; the smoke run drives edgeft's server as the real one does."""
    from bench import serve_load

    out = tmp_path / "serve_load.json"
    result = serve_load.main([str(gen_run[0] / "package"), "--clients", "1", "3", "--requests-per-client", "2",
                              "--max-tokens", "5", "--threads", "1", "--rounds", "1", "--out", str(out)])
    provenance_ok(result, out, "serve_load")
    for clients in ("1", "3"):
        edgeft = result["summary"][clients]["edgeft"]
        assert edgeft["failed"] == 0 and edgeft["tokens_per_s"]["median"] > 0 and edgeft["peak_rss_mib"]["median"] > 50
    measured = result["rounds_raw"][0]["edgeft@3"]
    assert measured["requests"] == 6 and measured["tokens"] == 6 * 5  # end of turn ignored: every token asked for


def test_adapt_loop(skills, tmp_path):
    from conftest import skill_dict, write_recipe

    from bench import adapt_loop

    base, made = skills
    recipe = write_recipe(tmp_path / "spam.yaml", skill_dict(base, "spam"))
    out = tmp_path / "adapt_loop.json"
    result = adapt_loop.main([str(made["routing"][1]), "--data", "sms-spam-sample", "-r", str(recipe), "--merged",
                              "export-genai", "--threads", "1", "--rounds", "2", "--prompt-tokens", "16",
                              "--new-tokens", "4", "--keep", str(tmp_path / "spam"), "--out", str(out)])
    provenance_ok(result, out, "adapt_loop")
    adapted = result["adapt"]
    assert adapted["wall_seconds"] > sum(adapted["seconds"].values()) * 0.9 and adapted["lora"]["dtype"] == "float16"
    assert adapted["adapter_bytes"] == (tmp_path / "spam/adapter/spam.onnx_adapter").stat().st_size
    merged, unmerged = result["speed"].values()
    assert merged["new_tokens"] == unmerged["new_tokens"] == 4 and unmerged["decode_tokens_per_s"]["median"] > 0
    assert result["unmerged_over_merged"] == unmerged["decode_tokens_per_s"]["median"] / merged["decode_tokens_per_s"]["median"]
    assert result["base_run_seconds"] is None  # the fixture's run was built stage by stage, without run.json


def test_device_roundtrip(cls_run, tmp_path):
    if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("the device round trip needs Debian's openssh-server (.ci/run installs it)")
    from bench import device_roundtrip

    out = tmp_path / "roundtrip.json"
    result = device_roundtrip.main([str(cls_run[0] / "package"), "--rounds", "1", "--skip-install", "--out", str(out)])
    provenance_ok(result, out, "device_roundtrip")
    bundle = result["bundles"][cls_run[0].name]  # bundles by their run folder's name
    assert bundle["predictions_identical"] and bundle["host"]["metrics"] == bundle["device"]["metrics"]
    assert bundle["device"]["p50_ms"]["median"] > 0 and "torch" not in bundle["device"]["versions"]


def test_tune_throughput(tmp_path):
    from bench import tune_throughput

    out = tmp_path / "tune.json"
    result = tune_throughput.main(["--shapes", "tiny", "--modes", "plain", "dequantized", "--batch", "2", "--seq", "32",
                                   "--steps", "2", "--warmup", "1", "--out", str(out)])
    provenance_ok(result, out, "tune_throughput")
    assert [r["mode"] for r in result["results"]] == ["plain", "dequantized"]
    assert all(r["tokens_per_s"] > 0 and len(r["losses"]) == 3 for r in result["results"])
    # the same NF4 weights and batches: the dequantized mode learns the plain recipe's curve
    assert result["ratios"]["tiny/dequantized"]["max_relative_loss_difference"] < 1e-2


def test_data_scale(tmp_path):
    from bench import data_scale

    out = tmp_path / "scale.json"
    result = data_scale.main(["--rows", "4000", "--chats", "600", "--rounds", "1", "--csv-source", "sms-spam-sample",
                              "--chat-source", "trec-sample", "--out", str(out)])
    provenance_ok(result, out, "data_scale")
    csv_run, chat_run = result["csv"], result["chat"]
    # every 20th row repeats an earlier one
    assert csv_run["rows_read"] == 4000 and csv_run["duplicates_removed"] == 4000 // 20 - 1
    assert chat_run["rows_read"] == 600 and chat_run["duplicates_removed"] == 600 // 20 - 1
    assert chat_run["test_examples"] == 500
    for run in (csv_run, chat_run):
        assert run["train_examples"] + run["validation_examples"] + run["test_examples"] == \
            run["rows_read"] - run["duplicates_removed"]
        assert 0 < run["seconds"]["median"] < 120 and 50 < run["peak_rss_mib"] < 2048
