"""The generative path: GGUF import (real SmolLM2), chat data, answer-only loss, both export
backends with parity, int4 variants, the generation benchmark, and the runtime."""
import json
import math

import pytest
from click.testing import CliRunner
from conftest import generation_recipe

from edgeft import EdgeftError
from edgeft.core.artifacts import read_manifest
from edgeft.core.recipe import recipe_from_dict


def test_import_turns_the_smollm2_gguf_into_a_working_hf_folder(smollm_base):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = read_manifest(smollm_base, stage="import")
    assert manifest.architecture == "llama" and manifest.metrics["parameters"] == 134_515_008
    assert not (smollm_base / "tokenizer.model").exists()  # the 100 MB GGUF copy is not kept
    tokenizer = AutoTokenizer.from_pretrained(smollm_base)
    assert tokenizer("Hello world")["input_ids"][0] != tokenizer.bos_token_id  # no BOS the GGUF does not ask for
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(smollm_base).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])


def test_import_refuses_files_that_are_not_loadable_gguf(tmp_path):
    import gguf

    from edgeft.stages.importer import import_gguf

    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    with pytest.raises(EdgeftError, match="is not a GGUF file"):
        import_gguf(text, tmp_path / "out")
    import numpy as np

    def write(name, arch, tensors):
        writer = gguf.GGUFWriter(str(tmp_path / name), arch)
        for tensor_name, value in tensors.items():
            writer.add_tensor(tensor_name, value)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return tmp_path / name

    vocab_only = write("vocab.gguf", "llama", {})
    with pytest.raises(EdgeftError, match="vocab.gguf holds no tensors: a GGUF without weights"):
        import_gguf(vocab_only, tmp_path / "out")
    whisper = write("whisper.gguf", "whisper", {"encoder.conv1.weight": np.zeros((4, 4), dtype=np.float32)})
    with pytest.raises(EdgeftError, match="GGUF architecture 'whisper' cannot be loaded by transformers"):
        import_gguf(whisper, tmp_path / "out")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes((tmp_path / "whisper.gguf").read_bytes()[:40])
    with pytest.raises(EdgeftError, match="cut.gguf: cannot read the GGUF header"):
        import_gguf(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_labelled_rows_become_chats_and_only_answer_tokens_are_scored(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    from edgeft.generation.chat import encode_chat
    from edgeft.generation.examples import ChatExamples, answer_nll
    from edgeft.generation.models import load_model
    from edgeft.stages.data import load_split, prepare_data

    recipe = recipe_from_dict(generation_recipe(tiny_llama))
    prepare_data(recipe, tmp_path / "data")
    train = load_split(tmp_path / "data", "train")
    roles = [m["role"] for m in train[0]["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert train[0]["answer"] in recipe.data.label_words.values()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    full, n_prompt = encode_chat(tokenizer, train[0]["messages"], 64)
    assert tokenizer.decode(full[n_prompt:]) == train[0]["answer"] + "<|im_end|>"
    # the loss over a left-padded batch and over packed rows is the same number
    model = load_model(tiny_llama).eval()
    plain = ChatExamples(train[:6], tokenizer, 64, [])
    packed = ChatExamples(train[:6], tokenizer, 200, [], packing=True)
    rows = packed.batches(batch_size=8, seed=0)[0]
    assert sum(len(r) for r in rows) == 6 and len(rows) < 6
    nll_plain, n_plain = answer_nll(model, plain.batch(list(range(6))))
    nll_packed, n_packed = answer_nll(model, packed.batch(rows))
    assert int(n_plain) == int(n_packed) == sum(len(f) - p for f, p in map(plain.encode, train[:6]))
    assert float(nll_packed) == pytest.approx(float(nll_plain), rel=1e-4)


def test_both_export_backends_pass_parity_with_identical_greedy_tokens(gen_run):
    run_dir, recipe, _ = gen_run
    for backend in ("optimum", "genai"):
        manifest = read_manifest(run_dir / f"export-{backend}", stage="export")
        parity = manifest.metrics["parity"]
        assert parity["passed"] and parity["greedy_identical"] and parity["greedy_tokens"] == 8
        assert parity["max_abs_logit_diff"] < recipe.export.parity_atol
        assert manifest.lm_head == "last_token_only"
    settings = json.loads((run_dir / "export-optimum/generation.json").read_text())
    assert settings["eos_token_ids"] == [2] and settings["system_prompt"] == recipe.data.system_prompt
    assert settings["chat"]["generation_prompt"] == "<|im_start|>assistant\n"


def test_int4_variants_hold_4_bit_weights_and_an_8_bit_head(gen_run):
    import onnx

    from edgeft.stages.quantize import count_ops

    run_dir, _, _ = gen_run
    for name in ("int4", "int4-optimum"):
        model = onnx.load(str(run_dir / "quantize" / name / "model.onnx"), load_external_data=False)
        bits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in model.graph.node
                if n.op_type == "MatMulNBits"}
        head = [b for n, b in bits.items() if "lm_head" in n]
        assert head == [8] and set(bits.values()) == {4, 8}, name
    assert count_ops(run_dir / "quantize/int4-optimum/model.onnx").get("GatherBlockQuantized") == 1
    # prefill_accuracy_level without an int8 cache: the decode graph at level 1, for AVX-512 CPUs only
    assert not (run_dir / "quantize/int4/model.prefill.onnx").exists()
    prefill = onnx.load(str(run_dir / "quantize/int4/model.prefill.avx512.onnx"), load_external_data=False)
    assert {a.i for n in prefill.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
            if a.name == "accuracy_level"} == {1}
    assert read_manifest(run_dir / "quantize/int8-dynamic").details["op_counts"].get("MatMulInteger", 0) > 0


def test_generation_report_rows_and_numbers(gen_run):
    run_dir, recipe, _ = gen_run
    report = json.loads((run_dir / "bench/report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert set(rows) == {"base-fp32", "trained", "pytorch-fp32", "onnx-fp32", "genai-fp32", "int4", "int4-optimum",
                         "int8-dynamic"}
    assert rows["base-fp32"]["decode"] == rows["trained"]["decode"] == []  # quality only
    # fp32 exports score the answers exactly as PyTorch does
    ref = rows["pytorch-fp32"]["metrics"]["answer_nll"]
    for name in ("onnx-fp32", "genai-fp32"):
        assert rows[name]["metrics"]["answer_nll"] == pytest.approx(ref, rel=1e-4)
        assert rows[name]["metrics"]["exact_match"] == rows["pytorch-fp32"]["metrics"]["exact_match"]
    test = [json.loads(line) for line in (run_dir / "data/test.jsonl").read_text().splitlines()]
    for name, row in rows.items():
        # exact match is what the stored answers score; perplexity is exp of the mean answer NLL
        said = row["predictions"]
        assert len(said) == len(test) == report["test_examples"]
        assert row["metrics"]["exact_match"] == pytest.approx(
            sum(s.strip().lower() == r["answer"].lower() for s, r in zip(said, test)) / len(test))
        assert row["metrics"]["answer_perplexity"] == pytest.approx(math.exp(row["metrics"]["answer_nll"]))
        if name in ("base-fp32", "trained"):
            continue
        lat = row["decode"][0]
        assert lat["prompt_tokens"] == recipe.bench.prompt_tokens and lat["new_tokens"] == recipe.bench.new_tokens
        # prefill speed is the prompt over the time to first token, round by round
        assert lat["prefill_tokens_per_s"]["max"] == pytest.approx(lat["prompt_tokens"] / (lat["ttft_ms"]["min"] / 1000))
        assert lat["prefill_tokens_per_s"]["min"] == pytest.approx(lat["prompt_tokens"] / (lat["ttft_ms"]["max"] / 1000))
        assert lat["ceiling_tokens_per_s"] > 0 and lat["bandwidth_gb_s"] > 0.5
        assert lat["fraction_of_ceiling"] == pytest.approx(lat["decode_tokens_per_s"]["median"] / lat["ceiling_tokens_per_s"])
        assert "latency_ms" not in row and "latency" not in row or row["latency"] == []
    assert rows["int4"]["size_bytes"] < rows["genai-fp32"]["size_bytes"]
    assert "decode tok/s" in (run_dir / "bench/report.md").read_text()


def test_the_ledger_follows_the_decoder_through_both_export_paths(gen_run):
    run_dir, _, _ = gen_run
    report = json.loads((run_dir / "bench/report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    steps = {s["model"]: s for s in report["ledger"]["steps"]}
    assert {m: s["previous"] for m, s in steps.items()} == {
        "trained": None, "pytorch-fp32": "trained", "onnx-fp32": "pytorch-fp32", "genai-fp32": "pytorch-fp32",
        "int4": "genai-fp32", "int4-optimum": "onnx-fp32", "int8-dynamic": "onnx-fp32"}
    for step in steps.values():
        assert step["metric"] == rows[step["model"]]["metrics"]["exact_match"]
        assert len(step["top1"]) == len(rows["int4"]["correct"])
        if step["previous"]:  # first answer tokens: recomputed here
            prev = steps[step["previous"]]
            same = sum(a == b for a, b in zip(prev["top1"], step["top1"]))
            assert step["agreement"] == pytest.approx(same / len(step["top1"]))
            assert step["mean_kl"] >= 0
    # fp32 exports reproduce PyTorch: the same first tokens, (almost) no divergence
    assert steps["onnx-fp32"]["agreement"] == 1 and steps["onnx-fp32"]["mean_kl"] < 1e-3


def test_runtime_generator_matches_pytorch_greedy(gen_run):
    from transformers import AutoTokenizer

    from edgeft.generation.models import load_model
    from edgeft.generation.parity import torch_greedy
    from edgeft.runtime import load

    run_dir, _, _ = gen_run
    generator = load(run_dir / "export-optimum")
    messages = [{"role": "user", "content": "Who wrote Hamlet ?"}]
    ids = generator.encode_chat(messages)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "merge")
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nReply with one word")
    _, reference = torch_greedy(load_model(run_dir / "merge").eval(), ids, 6)
    assert list(generator.generate_ids(ids, 6, stop=False)) == reference
    text = "".join(generator.stream(messages, max_new_tokens=6))
    stop = next((i for i, t in enumerate(reference) if t in generator.stop_ids), len(reference))
    assert text == tokenizer.decode(reference[:stop]) and stop > 0


def test_kv_cache_in_place_gives_the_copying_path_logits_and_grows(gen_run, monkeypatch):
    """The genai graphs' shared past/present buffers (runtime/kvcache.py): the same logits as new
    present tensors every step, through the prompt graph and the decode graph, across buffer growth,
    and an earlier state of the conversation continued after scoring an answer from it."""
    import numpy as np

    from edgeft.runtime import Generator, kvcache

    run_dir, _, _ = gen_run
    monkeypatch.setattr(kvcache, "MIN_CAPACITY", 16)  # grow within the test's 40 tokens
    folder = run_dir / "quantize/int4"  # an int4 graph and its prompt graph (prefill_accuracy_level)
    # the prompt graph is taken on AVX-512 CPUs; on others the decode graph runs prompts too
    assert Generator(folder, verify=False, cpu={"avx2"}).prompt_graph_file == "model.onnx"
    shared, copying = (Generator(folder, verify=False, cpu={"avx512f"}, shared_kv=kv) for kv in (True, False))
    assert shared.kv is not None and copying.kv is None and shared.prefill_session is not shared.session
    ids = shared.encode_chat([{"role": "user", "content": "Who wrote Hamlet ?"}])
    (a, state_a), (b, state_b) = shared.prefill(ids), copying.prefill(ids)
    prefilled = (a, state_a)
    for _ in range(40):
        assert np.abs(a - b).max() < 1e-4
        token = int(np.argmax(b))
        (a, state_a), (b, state_b) = shared.step(token, state_a), copying.step(token, state_b)
    assert shared.kv.capacity >= len(ids) + 40 > 16
    answer = list(copying.generate_ids(ids, 8, stop=False))
    shared.score_answer(ids, [5, 6, 7, 8], prefilled=prefilled)  # writes 3 positions past the prompt
    assert list(shared.generate_ids(ids, 8, stop=False, prefilled=prefilled)) == answer



def test_generate_and_chat_commands_stream_answers(gen_run):
    from edgeft.cli import cli

    run_dir, _, _ = gen_run
    from edgeft.runtime import load

    result = CliRunner().invoke(cli, ["generate", str(run_dir / "quantize/int4"), "What", "is", "NASA", "?",
                                      "--max-new-tokens", "5"])
    assert result.exit_code == 0, result.output
    assert result.output == load(run_dir / "quantize/int4").answer("What is NASA ?", 5) + "\n"
    chat = CliRunner().invoke(cli, ["chat", str(run_dir / "export-genai"), "--max-new-tokens", "4"],
                              input="Who is the president ?\nWhere is Rome ?\n\n")
    assert chat.exit_code == 0, chat.output
    generator = load(run_dir / "export-genai")
    first = generator.answer("Who is the president ?", 4)
    second = generator.answer([{"role": "user", "content": "Who is the president ?"},
                               {"role": "assistant", "content": first},
                               {"role": "user", "content": "Where is Rome ?"}], 4)
    assert chat.output.split("> ")[1:] == [first + "\n", second + "\n", ""]  # the empty line ends it
    refused = CliRunner().invoke(cli, ["generate", str(run_dir / "data"), "hi"])
    assert refused.exit_code == 2 and "is a 'data' artifact; expected 'import' or 'merge'" in refused.output
