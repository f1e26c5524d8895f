"""edgeft: fine-tune a compact transformer, merge, export to ONNX, quantize, benchmark, ship."""
import os
from pathlib import Path

from edgeft.runtime.errors import EdgeftError

__version__ = "0.1.0"
__all__ = ["EdgeftError", "__version__", "cache_dir"]


def cache_dir(*parts: str) -> Path:
    """edgeft's cache on this machine (built llama.cpp, assembled models, Arrow copies of data files):
    $EDGEFT_CACHE, else $XDG_CACHE_HOME/edgeft, else ~/.cache/edgeft."""
    root = os.environ.get("EDGEFT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeft"
    return Path(root).joinpath(*parts)
