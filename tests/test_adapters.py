"""Unmerged LoRA on one shared base (generation/adapters.py, runtime/adapters.py): two adapters
trained on different tiny tasks, switched per request, bound to their base by hash."""
import shutil

import pytest
from conftest import skill_dict, skill_recipe, write_recipe

from edgeft import EdgeftError
from edgeft.core.splits import load_split
from edgeft.generation.adapters import build_unmerged
from edgeft.runtime import Generator
from edgeft.runtime.files import GENERATION_FILE
from edgeft.stages.package import package, package_adapter
from edgeft.stages.quantize import quantize_variant


def prompts_of(run, n=6):
    return [r["messages"][:-1] for r in load_split(run / "data", "test")[:n]]


def greedy(generator, messages, adapter=None):
    return list(generator.generate_ids(generator.encode_chat(messages, adapter), 6, stop=False, adapter=adapter))


def test_unmerged_adapters_reproduce_their_merged_models_and_switch_cleanly(skills, tmp_path):
    """fp32: the unmerged base with each adapter gives its own merged model's greedy tokens, and
    switching back and forth changes nothing."""
    base, made = skills
    for name, (_, run) in made.items():
        out = tmp_path / name
        out.mkdir()
        details = build_unmerged(base, run / "tune", out, "fp32", None, name)
        shutil.copy(run / "export-genai" / GENERATION_FILE, out / GENERATION_FILE)
        assert details["lora_parameters"] > 0
    from edgeft.generation.adapters import base_sha256
    assert base_sha256(tmp_path / "routing/model.onnx") == base_sha256(tmp_path / "spam/model.onnx")
    shutil.copy(tmp_path / "spam/adapters/spam.onnx_adapter", tmp_path / "routing/adapters/")
    shared = Generator(tmp_path / "routing", verify=False)
    assert sorted(shared.adapters.loaded) == ["routing", "spam"]
    alone = {}
    for name, (_, run) in made.items():
        merged = Generator(run / "export-genai", verify=False)
        alone[name] = [greedy(shared, m, name) for m in prompts_of(run)]
        assert alone[name] == [greedy(merged, m) for m in prompts_of(run)], name
    bare = [greedy(shared, m, "none") for m in prompts_of(made["routing"][1])]
    assert bare != alone["routing"]  # the adapter changes the answers: the comparison above can fail
    for _ in range(2):
        for name, (_, run) in made.items():
            assert [greedy(shared, m, name) for m in prompts_of(run)] == alone[name]


def test_adapter_bundle_loads_on_its_base_and_is_refused_elsewhere(skills, tmp_path):
    base, made = skills
    (routing, run_r), (spam, run_s) = made["routing"], made["spam"]
    manifest = package_adapter(spam, run_s / "quantize/int4u", tmp_path / "spam-adapter")
    files = sorted(manifest.files)
    assert files == ["eval.jsonl", "generation.json", "labels.json", "spam.onnx_adapter"]
    assert manifest.base_sha256 == read_details(run_r / "quantize/int4u")["base_sha256"]
    package(routing, run_r / "quantize/int4u", tmp_path / "base-bundle")
    device = Generator(tmp_path / "base-bundle")
    assert device.add_adapter(tmp_path / "spam-adapter") == "spam"
    own = Generator(run_s / "quantize/int4u", verify=False)
    for messages in prompts_of(run_s):
        assert greedy(device, messages, "spam") == greedy(own, messages)
    # the adapter's own system prompt comes with it
    assert "spam or ham" in device.tokenizer.decode(device.encode_chat([{"role": "user", "content": "hi"}], "spam"))

    # a base quantized otherwise (block 64) is another base: refused, naming both hashes
    other = skill_recipe(base, "spam", block_size=64)
    quantize_variant(other, run_s / "export-genai", other.quantize.variants[0], tmp_path / "int4u-64")
    package_adapter(other, tmp_path / "int4u-64", tmp_path / "spam-64")
    wrong = read_details(tmp_path / "int4u-64")["base_sha256"]
    with pytest.raises(EdgeftError, match=f"made for the base with sha256 {wrong}, but .* holds the base with "
                                          f"sha256 {manifest.base_sha256}"):
        device.add_adapter(tmp_path / "spam-64")

    tampered = tmp_path / "spam-adapter/spam.onnx_adapter"
    data = bytearray(tampered.read_bytes())
    data[-5] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(EdgeftError, match="spam.onnx_adapter is damaged: its sha256 does not match"):
        Generator(tmp_path / "base-bundle").add_adapter(tmp_path / "spam-adapter")


def test_merged_models_take_no_adapters_and_unknown_names_are_refused(skills, tmp_path):
    _, made = skills
    _, run = made["routing"]
    with pytest.raises(EdgeftError, match="built merged; adapters need a base built with"):
        Generator(run / "export-genai", verify=False).add_adapter(tmp_path)
    with pytest.raises(EdgeftError, match=r"no adapter named 'chess' is loaded \(loaded: routing"):
        Generator(run / "quantize/int4u", verify=False).prefill([1, 2, 3], "chess")


def read_details(folder):
    from edgeft.core.artifacts import read_manifest
    return read_manifest(folder).details


def test_cli_writes_an_adapter_bundle_and_chats_with_it_switching_adapters(skills, tmp_path):
    from click.testing import CliRunner

    from edgeft.cli import cli

    base, made = skills
    run_r, run_s = made["routing"][1], made["spam"][1]
    recipe = write_recipe(tmp_path / "spam.yaml", skill_dict(base, "spam"))
    packed = CliRunner().invoke(cli, ["package", str(run_s / "quantize/int4u"), "--adapter-only", "-r", str(recipe),
                                      "-o", str(tmp_path / "spam-adapter")])
    assert packed.exit_code == 0, packed.output
    assert "adapter 'spam' for int4u" in packed.output
    expected = Generator(run_r / "quantize/int4u", verify=False)
    expected.add_adapter(tmp_path / "spam-adapter")
    first, second = expected.answer("Win a free prize now", adapter="spam"), expected.answer("What is NASA ?")
    chat = CliRunner().invoke(cli, ["chat", str(run_r / "quantize/int4u"), "--adapter", str(tmp_path / "spam-adapter")],
                              input="Win a free prize now\n/adapter routing\nWhat is NASA ?\n\n")
    assert chat.exit_code == 0, chat.output
    assert first and second and first in chat.output and second in chat.output
    assert chat.output.index(first) < chat.output.index(second)
    refused = CliRunner().invoke(cli, ["chat", str(run_r / "export-genai"), "--adapter", str(tmp_path / "spam-adapter")],
                                 input="\n")
    assert refused.exit_code != 0 and "built merged" in refused.output
