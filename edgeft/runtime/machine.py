"""What a measurement ran on: the CPU (model, instruction sets that pick onnxruntime's kernels),
cores, memory and OS, read from the standard library and /proc alone so that a device reports
itself the same way the host does; and the versions of the libraries that did the work."""
from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# the flags that decide which kernels run (onnxruntime int8/int4, bitsandbytes): a model name alone may not say
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "asimd", "asimddp",
                "i8mm", "sve")
RUNTIME_LIBRARIES = ("edgeft-runtime", "onnxruntime", "tokenizers", "numpy")


def _cpuinfo() -> tuple[str | None, set[str]]:
    """The CPU's name (x86 'model name'; on ARM boards the board's 'Model' or 'Hardware') and its flags."""
    with contextlib.suppress(OSError):
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        name = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
        return name, set((fields.get("flags") or fields.get("Features") or "").split())
    return None, set()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo), empty where they cannot be read."""
    return _cpuinfo()[1]


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def machine_info() -> dict[str, Any]:
    name, flags = _cpuinfo()
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                            "os": _os_name(), "cpu": name or platform.processor() or platform.machine()}
    if flags:
        info["isa"] = [f for f in CPU_FEATURES if f in flags]
    if (memory := _memory_gib()) is not None:
        info["memory_gib"] = memory
    return info


def library_versions(names: tuple[str, ...] = RUNTIME_LIBRARIES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _status_bytes(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set size. VmHWM, not getrusage: ru_maxrss survives exec, so a
    child started by a big parent would report the parent's peak (macOS: getrusage, in bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _status_bytes("VmHWM") or (peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    return _status_bytes("VmRSS")
