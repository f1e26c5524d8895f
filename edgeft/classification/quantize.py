"""Static int8 (QDQ) for classifiers. Default settings destroy accuracy (BERT 0.87 -> 0.33), so
only MatMul/Gemm are quantized, and calibration inputs are padded to one length (percentile and
entropy calibration fail on ragged inputs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def calibration_reader(model_path: Path, rows: list[dict], tokenizer, max_length: int):
    from onnxruntime.quantization import CalibrationDataReader

    from edgeft.runtime.onnx import session

    names = {i.name for i in session(model_path).get_inputs()}

    class Reader(CalibrationDataReader):
        def __init__(self):
            enc = tokenizer([r["text"] for r in rows], padding="max_length", truncation=True,
                            max_length=max_length, return_tensors="np")
            self.feeds = iter([{k: v[i:i + 1].astype(np.int64) for k, v in enc.items() if k in names}
                               for i in range(len(rows))])

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


def quantize_static_int8(prepared: Path, dst: Path, variant, rows: list[dict], tokenizer, max_length: int) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[variant.calibrate_method]
    quantize_static(str(prepared), str(dst), calibration_reader(prepared, rows, tokenizer, max_length),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
                    per_channel=variant.per_channel, reduce_range=variant.reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
