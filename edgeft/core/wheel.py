"""The edgeft-runtime wheel a bundle carries (`edgeft package --with-runtime`), rebuilt from the
runtime this host runs, so that the device installs exactly the code the host measured with.

The installed `edgeft.runtime` package holds its own pyproject.toml; it is copied out and built
by pip with the setuptools already installed (no build isolation, no index: works offline), with
SOURCE_DATE_EPOCH fixed so that the same code gives a byte-identical wheel, and so the same bundle
hash, from one packaging to the next.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeft.runtime.errors import EdgeftError

REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold


def runtime_source() -> Path:
    import edgeft.runtime

    folder = Path(edgeft.runtime.__file__).parent
    if not (folder / "pyproject.toml").exists():
        raise EdgeftError(f"{folder} lacks pyproject.toml: the installed edgeft-runtime cannot be rebuilt into a wheel "
                          "(reinstall it with `pip install ./edgeft/runtime` from the repository)")
    return folder


def build_runtime_wheel(dest: Path) -> Path:
    """Write edgeft_runtime-<version>-py3-none-any.whl into `dest`; returns its path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeft-runtime-") as tmp:
        source = Path(tmp) / "edgeft-runtime"
        shutil.copytree(runtime_source(), source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        built = Path(tmp) / "dist"
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                               "--quiet", "--wheel-dir", str(built), str(source)], capture_output=True, text=True,
                              env={**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH, "PIP_NO_INPUT": "1"})
        wheels = sorted(built.glob("edgeft_runtime-*.whl"))
        if done.returncode != 0 or not wheels:
            raise EdgeftError("building the edgeft-runtime wheel failed: "
                              + ((done.stderr or done.stdout).strip().splitlines() or ["no wheel was written"])[-1])
        return Path(shutil.copy(wheels[0], dest / wheels[0].name))
