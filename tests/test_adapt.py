"""`edgeft adapt`: a new skill's adapter on an existing unmerged base, without exporting or quantizing
anything again; and the continuous-batching engine the server decodes with."""
from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
from click.testing import CliRunner
from conftest import skill_dict, write_recipe

from edgeft.cli import cli
from edgeft.core.artifacts import read_manifest
from edgeft.runtime import Generator
from edgeft.runtime.engine import Engine, Request
from edgeft.runtime.sampling import Sampler


def test_adapt_gives_the_adapter_the_full_recipe_builds_in_fp16_bound_to_the_base(skills, tmp_path):
    tiny_base, made = skills
    _, run_s = made["spam"]
    _, run_r = made["routing"]
    # the spam skill's recipe and data on the routing run's base: what `edgeft run` built for spam
    recipe = write_recipe(tmp_path / "spam.yaml", skill_dict(tiny_base, "spam"))
    result = CliRunner().invoke(cli, ["adapt", str(run_r), "--data", "sms-spam-sample", "-r", str(recipe),
                                      "-o", str(tmp_path / "mine"), "--name", "spam"])
    assert result.exit_code == 0, result.output
    assert "adapter 'spam' for int4u" in result.output
    bundle = tmp_path / "mine" / "adapter"
    manifest = read_manifest(bundle, stage="adapter")
    base = read_manifest(run_r / "quantize/int4u")
    assert manifest.base_sha256 == base.details["base_sha256"] and manifest.adapter_name == "spam"
    assert not (tmp_path / "mine" / "export-genai").exists() and not (tmp_path / "mine" / "quantize").exists()
    # the same data, recipe and seed: the very adapter the full pipeline split off its own build, at fp16
    mine = ort.AdapterFormat.read_adapter(str(bundle / manifest.adapter_file)).get_parameters()
    full = ort.AdapterFormat.read_adapter(str(run_s / "quantize/int4u/adapters/spam.onnx_adapter")).get_parameters()
    assert set(mine) == set(full) and all(mine[k].data_type() == "tensor(float16)" for k in mine)
    assert max(np.abs(mine[k].numpy().astype(np.float32) - full[k].numpy()).max() for k in mine) < 1e-3
    assert manifest.metrics["adapter_bytes"] < (run_s / "quantize/int4u/adapters/spam.onnx_adapter").stat().st_size * 0.6
    # it loads on the routing base, answers as the spam skill's own build does, and says how it scores
    generator = Generator(run_r / "quantize/int4u", verify=False)
    assert generator.add_adapter(bundle) == "spam"
    own = Generator(run_s / "quantize/int4u", verify=False)
    ids = own.encode_chat([{"role": "user", "content": "WIN a FREE prize now"}], "spam")
    mine_logits, own_logits = generator.prefill(ids, "spam")[0], own.prefill(ids, "spam")[0]
    bare = generator.prefill(ids, "none")[0]
    assert np.abs(mine_logits - own_logits).max() < 0.01 * np.abs(bare - own_logits).max()  # fp16: far below the skill
    m = manifest.metrics
    assert m["examples"] == manifest.self_checks["eval_examples"] > 0 and 0 <= m["exact_match"] <= 1
    assert m["vs_base"]["examples"] == m["examples"] and set(m["seconds"]) == {"data", "tune", "write_and_evaluate"}
    # fp16 against the same adapter at fp32, paired: the tiny model's greedy answers do not move
    assert m["vs_fp32"]["examples"] == m["examples"] and abs(m["exact_match"] - m["fp32_exact_match"]) <= 1 / m["examples"]
    assert m["lora"]["dtype"] == "float16" and m["lora"]["lora_r"] == 8


def test_adapt_refuses_a_base_without_an_unmerged_variant(gen_run, tmp_path):
    run_dir, _, _ = gen_run
    result = CliRunner().invoke(cli, ["adapt", str(run_dir), "--data", "trec-sample", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "must be a run folder with one variant built with lora: unmerged" in result.output


def test_the_engine_decodes_a_batch_as_each_conversation_alone_and_cancels_within_a_token(gen_run):
    run_dir, _, _ = gen_run
    generator = Generator(run_dir / "package", verify=False)
    questions = ["Where is Kyoto ?", "What does NASA stand for ?", "Who wrote Hamlet ?", "How far is the moon ?", "Why ?"]
    prompts = [generator.encode_chat([{"role": "user", "content": q}]) for q in questions]
    alone = [list(generator.generate_ids(p, 10)) for p in prompts]
    engine = Engine(generator, slots=3).start()  # five conversations on three rows: some wait, join and leave
    got, done = {i: [] for i in range(len(prompts))}, threading.Barrier(len(prompts) + 2, timeout=60)

    def emitter(i, cancel_after=None):
        def emit(kind, value):
            got[i].append(value if kind == "token" else (kind, value))
            if cancel_after and kind == "token" and len(got[i]) == cancel_after:
                requests[i].cancel()  # from the engine's own thread: the next step drops it
            if kind != "token":
                threading.Thread(target=done.wait).start()
        return emit

    requests = {i: Request(p, 10, Sampler(0), emitter(i)) for i, p in enumerate(prompts)}
    requests[5] = Request(prompts[0], 50, Sampler(0), emitter(5, cancel_after=3))
    got[5] = []
    for r in requests.values():
        engine.submit(r)
    done.wait()
    engine.stop()
    for i in range(len(prompts)):
        assert got[i][:-1] == alone[i] and got[i][-1][0] == "done", i
    assert got[5][:3] == alone[0][:3] and got[5][3:] == [("done", "cancelled")]  # not one token more
    assert engine.active == 0 and engine.queued == 0
