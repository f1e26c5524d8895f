"""Training internals: how a base model is fine-tuned with LoRA / QLoRA.

Read `finetune.py` top to bottom first (the recipe: setup, restore, train, validate, checkpoint);
it uses `model.py` (the base with its adapter, the optimizer, the batch size), `batches.py`
(examples as batches), `qlora.py` (how an NF4 base is held) and `grid.py` (the shipped int4 grid
an adapter can be trained against). The tune stage (stages/tune.py) runs it and writes the artifact.
"""
