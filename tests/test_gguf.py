"""GGUF as an export target and llama.cpp as a bench runtime (generation/gguf.py), through `edgeft
run` on the tiny llama with SmolLM2's real tokenizer: llama.cpp's own converter and quantizer,
llama-cpp-python built by `edgeft llamacpp-setup` (.ci/run does it and sets EDGEFT_REQUIRE_GGUF=1,
so there these tests run rather than skip)."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
from conftest import copy_tree, generation_recipe, write_recipe

from edgeft.core.artifacts import read_manifest
from edgeft.generation.llamacpp_build import cmake_args
from edgeft.runtime.files import GGUF_FILE

if os.environ.get("EDGEFT_REQUIRE_GGUF") != "1":
    pytest.importorskip("llama_cpp", reason="the gguf extra (edgeft llamacpp-setup) is not installed")

GGUF_VARIANTS = [{"name": "q8_0", "source": "gguf", "method": "gguf", "type": "Q8_0"},
                 {"name": "q4_0", "source": "gguf", "method": "gguf", "type": "Q4_0"}]


@pytest.fixture(scope="module")
def gguf_run(tiny_llama, tmp_path_factory):
    """`edgeft run` with the gguf backend beside genai, packaging the llama.cpp Q8_0 variant."""
    from click.testing import CliRunner

    from edgeft.cli import cli

    root = tmp_path_factory.mktemp("gguf-run")
    base = copy_tree(tiny_llama, root / "run" / "base")
    recipe = generation_recipe(base, export={"backends": ["genai", "gguf"], "parity_samples": 4,
                                             "parity_new_tokens": 8},
                               quantize={"variants": [{"name": "int4", "source": "genai", "method": "int4",
                                                       "accuracy_level": 4}, *GGUF_VARIANTS]},
                               package={"variant": "q8_0"})
    path = write_recipe(root / "recipe.yaml", recipe)
    result = CliRunner().invoke(cli, ["run", str(path), "-o", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run", result.output


def test_gguf_export_matches_pytorch_and_quantizes_with_llama_cpp(gguf_run):
    run, _ = gguf_run
    exported = read_manifest(run / "export-gguf")
    parity = exported.metrics["parity"]
    assert exported.format == "gguf" and exported.backend == "gguf"
    assert parity["passed"] and parity["greedy_identical"] and parity["max_abs_logit_diff"] < 1e-3
    f32 = (run / "export-gguf" / GGUF_FILE).stat().st_size
    sizes = {v["name"]: (run / "quantize" / v["name"] / GGUF_FILE).stat().st_size for v in GGUF_VARIANTS}
    assert sizes["q4_0"] < sizes["q8_0"] < f32  # really requantized, by llama.cpp's types
    for v in GGUF_VARIANTS:
        manifest = read_manifest(run / "quantize" / v["name"])
        assert manifest.format == "gguf" and manifest.details["gguf_type"] == v["type"]
        assert manifest.metrics["vs_fp32"]["compared"] > 0


def test_bench_scores_and_times_gguf_variants_beside_onnx(gguf_run):
    run, output = gguf_run
    report = json.loads((run / "bench/report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    onnx = rows["int4"]
    for name in ("gguf-fp32", "q8_0", "q4_0"):
        row = rows[name]
        assert row["format"] == "gguf" and "error" not in row
        assert len(row["predictions"]) == len(onnx["predictions"]) == report["test_examples"]
        speed = row["decode"][0]
        assert speed["decode_tokens_per_s"]["median"] > 0 and speed["prefill_tokens_per_s"]["median"] > 0
        assert row["peak_rss_bytes"]["1"] > 0
    # F32 GGUF and the merged PyTorch model answer the same held-out questions the same way
    assert rows["gguf-fp32"]["predictions"] == rows["pytorch-fp32"]["predictions"]
    steps = {s["model"]: s for s in report["ledger"]["steps"]}
    assert steps["gguf-fp32"]["step"] == "exported to GGUF" and steps["q4_0"]["previous"] == "gguf-fp32"
    assert "q4_0" in output  # the table at the end of the run


def test_packaged_gguf_has_its_hashes_readme_and_runs_in_llama_cpp(gguf_run):
    from llama_cpp import Llama

    run, _ = gguf_run
    bundle = run / "package"
    manifest = read_manifest(bundle)
    assert manifest.format == "gguf" and manifest.gguf_type == "Q8_0"
    digest = hashlib.sha256((bundle / GGUF_FILE).read_bytes()).hexdigest()
    assert manifest.files[GGUF_FILE]["sha256"] == digest
    readme = (bundle / "README.md").read_text()
    assert f"llama-cli -m {GGUF_FILE}" in readme and "ollama create" in readme and "exact match" in readme
    # llama.cpp's own tokenizer and chat template (inside the GGUF) give the ids the model was tuned on
    from tokenizers import Tokenizer

    llm = Llama(str(bundle / GGUF_FILE), n_ctx=256, verbose=False)
    ours = Tokenizer.from_file(str(run / "quantize/q8_0/tokenizer.json"))
    for row in map(json.loads, (bundle / "eval.jsonl").read_text().splitlines()[:8]):
        text = row["messages"][-2]["content"] + " naïve – ü"
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ours.encode(text).ids
    question = json.loads((bundle / "eval.jsonl").read_text().splitlines()[0])["messages"][-2]["content"]
    out = llm.create_chat_completion([{"role": "user", "content": question}], temperature=0, max_tokens=4)
    template = llm.metadata["tokenizer.chat_template"]
    assert "<|im_start|>" in template and out["usage"]["prompt_tokens"] == len(ours.encode(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n").ids)


def test_without_the_extra_the_error_names_it_and_the_build_flags(tmp_path, gguf_run):
    run, _ = gguf_run
    code = ("import sys; sys.modules['llama_cpp'] = None\n"
            "from edgeft.generation.gguf import llama_cpp\nllama_cpp()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "llama-cpp-python is not installed" in done.stderr and "edgeft llamacpp-setup" in done.stderr
    assert "-DGGML_AMX_TILE=OFF" in done.stderr
    env = {**os.environ, "EDGEFT_LLAMA_CPP": str(tmp_path)}  # a tree without the converter
    done = subprocess.run([sys.executable, "-m", "edgeft.cli", "export", str(run / "merge"), "--backend", "gguf",
                           "-r", str(run / "recipe.yaml"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert f"convert_hf_to_gguf.py is not in EDGEFT_LLAMA_CPP={tmp_path}" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_gguf_whose_tokenizer_splits_text_differently_is_refused(gguf_run, tmp_path):
    """The GGUF carries its own vocabulary; if it and tokenizer.json disagree, llama.cpp's users would
    feed the model other tokens than it was tuned on (here: tokenizer.json lost its first merges)."""
    from edgeft import EdgeftError
    from edgeft.generation.gguf import LlamaCppGenerator

    run, _ = gguf_run
    folder = tmp_path / "mismatch"
    folder.mkdir()
    for name in (GGUF_FILE, "tokenizer.json", "generation.json"):
        (folder / name).write_bytes((run / "export-gguf" / name).read_bytes())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["model"]["merges"] = tokenizer["model"]["merges"][2000:]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(EdgeftError, match="the GGUF's tokenizer splits a prompt differently from tokenizer.json"):
        LlamaCppGenerator(folder, 1).encode_chat([{"role": "user", "content": "What does NASA stand for ?"}])


def test_cmake_args_follow_the_cpu_and_never_enable_amx():
    xeon = {"avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"}
    epyc = {"avx", "avx2", "fma", "f16c", "bmi2"}
    intel, amd = cmake_args(xeon, "x86_64"), cmake_args(epyc, "x86_64")
    assert "-DGGML_NATIVE=OFF" in intel and "-DGGML_AMX_TILE=OFF" in intel and "-DGGML_AMX_INT8=OFF" in intel
    assert "-DGGML_AVX512=ON" in intel and "-DGGML_AVX512_VNNI=ON" in intel
    assert "-DGGML_AVX512=OFF" in amd and "-DGGML_AVX2=ON" in amd and "-DGGML_AVX512_VNNI=OFF" in amd
    assert cmake_args(set(), "aarch64")[0] == "-DGGML_NATIVE=ON"
