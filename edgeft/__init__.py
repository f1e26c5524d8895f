"""edgeft: fine-tune a compact transformer, merge, export to ONNX, quantize, benchmark, ship."""

from edgeft.runtime.errors import EdgeftError

__version__ = "0.1.0"
__all__ = ["EdgeftError", "__version__"]
