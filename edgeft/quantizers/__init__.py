"""Variant kinds that both tasks use, built by onnxruntime's quantizers: int8 with activations
quantized at run time (dynamic.py), and the settings every weight-only MatMulNBits kind shares
(weight_only.py). Task-specific kinds live in their task's package; core/variants.py lists them all."""
