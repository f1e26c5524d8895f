"""Package a GGUF variant: the .gguf file for llama.cpp (or Ollama, LM Studio), a held-out slice to
measure it with, a README with the commands, and a manifest with the sha256 of every file.

The edgeft runtime is not in this bundle: llama.cpp is the runtime. The chat template travels
inside the GGUF (the converter writes it from the tokenizer config), so `llama-cli -cnv` formats
turns as the fine-tune was trained.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft.core.artifacts import (
    Manifest,
    input_ref,
    is_up_to_date,
    stage_output,
    up_to_date,
    variant_name,
    write_manifest,
)
from edgeft.core.recipe import dump_recipe
from edgeft.runtime.files import BUNDLE_README, EVAL_FILE, GENERATION_FILE, GGUF_FILE, RECIPE_FILE
from edgeft.runtime.onnx import read_json
from edgeft.stages.bundling import bench_metrics, measured_lines, report_for, write_eval_slice

GGUF_README = """# {recipe}: a GGUF bundle made by edgeft

Variant `{variant}` ({gguf_type}) of the fine-tuned model, converted by llama.cpp's own
`convert_hf_to_gguf.py` and quantized by its own quantizer (llama-cpp-python {llama_cpp} sources).
Files: {files}. `manifest.json` lists the sha256 of every file. `{eval}` holds {eval_examples}
held-out test examples with their answers.

## llama.cpp

```bash
sha256sum {gguf}        # compare with manifest.json
llama-cli -m {gguf} -cnv --temp 0 -sys "{system}"
llama-server -m {gguf} --port 8080 --temp 0      # OpenAI-compatible /v1/chat/completions
```

## Ollama

```bash
printf 'FROM ./{gguf}\\nPARAMETER temperature 0\\nSYSTEM "%s"\\n' "{system}" > Modelfile
ollama create {recipe} -f Modelfile && ollama run {recipe}
```

## Python (llama-cpp-python)

```python
from llama_cpp import Llama
llm = Llama("{gguf}", n_ctx=2048, verbose=False)
out = llm.create_chat_completion([{{"role": "system", "content": "{system}"}},
                                  {{"role": "user", "content": "What does NASA stand for ?"}}], temperature=0)
print(out["choices"][0]["message"]["content"])
```

## Measured on the host that made it, through llama.cpp (see manifest.json, `metrics`)
{measured}
"""


def package_gguf(recipe, variant_dir: Path, source: Manifest, out: Path, *, bench_dir: Path | None = None,
                 force: bool = True) -> Manifest:
    from edgeft.generation.gguf import LLAMA_CPP_PYTHON

    name = variant_name(source)
    metrics = bench_metrics(report_for(variant_dir, bench_dir), name)
    inputs = [input_ref("variant", variant_dir, source)]
    config = {"variant": name, "recipe": recipe.model_dump(mode="json"), "metrics": metrics}
    if not force and is_up_to_date(out, inputs, config):
        return up_to_date(out)
    settings = read_json(variant_dir / GENERATION_FILE, "the chat settings")
    system = (settings.get("system_prompt") or "").replace('"', '\\"')
    with stage_output(out) as tmp:
        shutil.copy(variant_dir / GGUF_FILE, tmp / GGUF_FILE)
        (tmp / RECIPE_FILE).write_text(dump_recipe(recipe))
        examples = len(write_eval_slice(tmp, source, recipe.package.eval_samples))
        files = [GGUF_FILE, EVAL_FILE, RECIPE_FILE]
        gguf_type = source.details.get("gguf_type", "F32")
        (tmp / BUNDLE_README).write_text(GGUF_README.format(
            recipe=recipe.name, variant=name, gguf_type=gguf_type, llama_cpp=LLAMA_CPP_PYTHON, files=", ".join(files),
            eval=EVAL_FILE, eval_examples=examples, gguf=GGUF_FILE, system=system, measured=measured_lines(metrics)))
        return write_manifest(tmp, stage="package", task=source.task, inputs=inputs, config=config, metrics=metrics,
                              variant=name, format="gguf", gguf_type=gguf_type, labels=source.labels,
                              self_checks={"eval_examples": examples},
                              runtime={"requires": f"llama.cpp (measured with llama-cpp-python {LLAMA_CPP_PYTHON})"})
