"""edgeft: fine-tune a compact transformer, merge, export to ONNX, quantize, benchmark, ship."""

__version__ = "0.1.0"


class EdgeftError(Exception):
    """An error the user can fix: the CLI prints its message and exits non-zero, no traceback."""
