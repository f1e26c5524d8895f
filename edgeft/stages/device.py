"""Bench on the device: `edgeft bench BUNDLE --on "ssh user@host" [--install]`.

The steps, each one `sh -c` through the prefix (benchkit/remote.py):
1. probe: python3 and its version, free disk, whether the bundle (same manifest hash) and a
   complete runtime venv are already there; leftovers of an earlier cut copy are removed;
2. copy (skipped when the device holds this very bundle): a tar stream unpacked into a hidden
   folder, checked against the bundle's manifest with the device's own python3, then renamed into
   place, so the folder appears only when complete; a trap removes the hidden folder on failure;
3. install (--install): a venv named by the runtime wheel's hash, marked complete only after the
   wheel and its dependencies are in and import; a failed install is removed;
4. run `python -m edgeft.runtime bench --json` there, and (by default) the same command here, and
   write both as rows of one report: the device's CPU, cores and OS as the device reports them.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from edgeft.benchkit.ledger import device_ledger
from edgeft.benchkit.remote import Device
from edgeft.benchkit.report import mib, write_reports
from edgeft.core.artifacts import input_ref, stage_output, write_manifest
from edgeft.core.console import say
from edgeft.runtime.device_bench import manifest_sha256
from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.manifest import Manifest, read_manifest
from edgeft.runtime.report import Decode, rows_of

COMPLETE = ".edgeft-complete"  # written last into an installed venv
NO_VENV = "python3 cannot create a venv here (Debian, Raspberry Pi OS: apt install python3-venv)"
VERIFY_COPY = """import hashlib, json, os, sys
folder, expected = sys.argv[1], sys.argv[2]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
m = os.path.join(folder, "manifest.json")
if sha(m) != expected:
    sys.exit("the copied manifest.json differs from the host's")
for rel, meta in json.load(open(m))["files"].items():
    p = os.path.join(folder, rel)
    if not os.path.isfile(p) or os.path.getsize(p) != meta["bytes"] or sha(p) != meta["sha256"]:
        sys.exit("copied file damaged or missing: " + rel)
"""
MANIFEST_HASH = "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"


def probe_script(python: str, base: str, dest: str, venv: str) -> str:
    q = shlex.quote
    return f"""
command -v {q(python)} >/dev/null 2>&1 || {{ echo "edgeft-probe python="; exit 0; }}
mkdir -p {q(base)}/bundles || exit 3
rm -rf {q(base)}/bundles/.incoming.* 2>/dev/null
for v in {q(base)}/venv-*; do [ -d "$v" ] && [ ! -f "$v/{COMPLETE}" ] && rm -rf "$v"; done
echo "edgeft-probe python=$({q(python)} -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
echo "edgeft-probe free_kib=$(df -Pk {q(base)} | awk 'NR==2 {{print $4}}')"
[ -f {q(dest)}/manifest.json ] && echo "edgeft-probe bundle=$({q(python)} -c {q(MANIFEST_HASH)} {q(dest)}/manifest.json)"
[ -f {q(venv)}/{COMPLETE} ] && echo "edgeft-probe venv=yes"
{q(python)} -c 'import edgeft.runtime' 2>/dev/null && echo "edgeft-probe system_runtime=yes"
exit 0
"""


def copy_script(python: str, base: str, dest: str, expected: str) -> str:
    q = shlex.quote
    return f"""set -eu
tmp=$(mktemp -d {q(base)}/bundles/.incoming.XXXXXX)
trap 'rm -rf "$tmp"' EXIT HUP INT TERM PIPE
chmod 755 "$tmp"
tar -xf - -C "$tmp"
{q(python)} -c {q(VERIFY_COPY)} "$tmp" {q(expected)}
rm -rf {q(dest)}
mv "$tmp" {q(dest)}
trap - EXIT HUP INT TERM PIPE
echo edgeft-copied
"""


def install_script(python: str, venv: str, wheel: str, pip_args: str) -> str:
    q = shlex.quote
    return f"""set -eu
rm -rf {q(venv)}
trap 'rm -rf {q(venv)}' EXIT HUP INT TERM PIPE
{q(python)} -m venv {q(venv)} || {{ echo "{NO_VENV}" >&2; exit 4; }}
{q(venv)}/bin/python -m pip install --quiet --disable-pip-version-check {q(wheel)} {pip_args}
{q(venv)}/bin/python -c 'import edgeft.runtime.cli'
touch {q(venv)}/{COMPLETE}
trap - EXIT HUP INT TERM PIPE
echo edgeft-installed
"""


def parse_probe(out: str) -> dict:
    found = {}
    for line in out.splitlines():
        if line.startswith("edgeft-probe "):
            key, _, value = line[len("edgeft-probe "):].partition("=")
            found[key] = value.strip()
    return found


def prepare(device: Device, bundle: Path, manifest: Manifest, *, base: str, python: str, install: bool,
            pip_args: str) -> tuple[str, str]:
    """Get the bundle (and with `install`, the runtime) onto the device; returns (bundle folder there,
    the python that runs the runtime there)."""
    wheel = manifest.runtime.get("wheel") if isinstance(manifest.runtime, dict) else None  # older bundles: a string
    digest = manifest_sha256(bundle)
    dest = f"{base}/bundles/{bundle.name}-{digest[:12]}"
    venv = f"{base}/venv-{manifest.files[wheel]['sha256'][:12]}" if wheel else f"{base}/venv-none"
    found = parse_probe(device.run(probe_script(python, base, dest, venv), "probing the device"))
    if "python" not in found:
        raise EdgeftError(f"the device did not answer the probe through `{device.prefix}`")
    if not found["python"]:
        raise EdgeftError(f"no {python} on the device: install Python 3.10 or newer there (or name it with --python)")
    if tuple(map(int, found["python"].split("."))) < (3, 10):
        raise EdgeftError(f"the device's {python} is {found['python']}: edgeft-runtime needs Python 3.10 or newer")
    if found.get("bundle") == digest:
        say(f"device: {dest} already holds this bundle (manifest sha256 {digest[:12]}): copy skipped")
    else:
        size = sum(f["bytes"] for f in manifest.files.values())
        free = int(found.get("free_kib") or 0) * 1024
        if free and free < size * 1.1:
            raise EdgeftError(f"the device has {mib(free)} MiB free in {base}; the bundle needs {mib(size)} MiB")
        device.send_folder(bundle, copy_script(python, base, dest, digest), f"copying {bundle} to the device")
        say(f"device: copied {bundle} to {dest} ({mib(size)} MiB), checked against its manifest")
    if install and found.get("venv") != "yes":
        if not wheel:
            raise EdgeftError(f"{bundle} carries no runtime wheel: package it with --with-runtime to use --install")
        device.run(install_script(python, venv, f"{dest}/{wheel}", pip_args), "installing the runtime")
        say(f"device: installed {wheel} into {venv}")
    elif found.get("venv") == "yes":
        say(f"device: runtime venv {venv} already installed")
    elif found.get("system_runtime") != "yes":
        raise EdgeftError(f"the device has no edgeft runtime for {python}: pass --install (the bundle's wheel goes "
                          f"into a venv under {base}) or pip install {wheel or 'edgeft-runtime'} there")
    return dest, (f"{venv}/bin/python" if install or found.get("venv") == "yes" else python)


def bench_args(threads: int | None, rounds: int, cold_rounds: int) -> list[str]:
    return ["--json", "--rounds", str(rounds), "--cold-rounds", str(cold_rounds)] + (["--threads", str(threads)]
                                                                                    if threads else [])


def run_here(bundle: Path, args: list[str]) -> dict:
    """The same device bench on this host, in a process of its own (as on the device)."""
    done = subprocess.run([sys.executable, "-m", "edgeft.runtime", "bench", str(bundle), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise EdgeftError(f"the bench of {bundle} here failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return last_json(done.stdout)


def last_json(out: str) -> dict:
    """The report a bench printed: the JSON object from its first line "{" on (a device's shell start-up
    files may print lines of their own before it)."""
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line == "{"), None)
    try:
        return json.loads("\n".join(lines[start:])) if start is not None else json.loads(out)
    except json.JSONDecodeError:
        raise EdgeftError(f"the bench printed no report: {(out.strip().splitlines() or ['(nothing)'])[-1][:200]}") from None


def bench_on_device(bundle: Path, prefix: str, out: Path, *, install: bool = False, threads: int | None = None,
                    rounds: int = 3, cold_rounds: int = 3, remote_dir: str = "~/edgeft", python: str = "python3",
                    pip_args: str = "", compare_host: bool = True) -> dict:
    bundle = Path(bundle)
    manifest = read_manifest(bundle, stage="package", what="bundle")
    device = Device(prefix)
    base = remote_dir
    if base.startswith("~"):  # the device's home, as the device names it
        base = device.run('echo "$HOME"', "reading the device's home folder").strip() + base[1:]
    dest, py = prepare(device, bundle, manifest, base=base, python=python, install=install, pip_args=pip_args)
    args = bench_args(threads, rounds, cold_rounds)
    say(f"device: running edgeft-runtime bench ({rounds} rounds, {cold_rounds} cold starts)")
    remote = last_json(device.run(shlex.join([py, "-m", "edgeft.runtime", "bench", dest, *args]), "the bench"))
    rows = [_where(remote, "device", prefix)]
    if compare_host:
        say("host: running the same bench here")
        rows.insert(0, _where(run_here(bundle, args), "host", "this host"))
    report = {"task": manifest.task, "recipe": f"{bundle.name} ({manifest.variant})", "bundle": remote["bundle"],
              "on": prefix, "variants": rows, "timed": remote["timed"], "test_examples": remote["eval_examples"],
              "rounds": rounds, "command": " ".join(sys.argv)}
    if compare_host:  # the ledger's device step: the same examples there and here
        report["ledger"] = device_ledger(rows[0], rows[1], remote["quality_metric"])
    with stage_output(out) as tmp:
        write_reports(report, tmp, device_view(report))
        write_manifest(tmp, stage="bench", task=manifest.task, inputs=[input_ref("bundle", bundle, manifest)],
                       config={"on": prefix, "threads": threads, "rounds": rounds, "cold_rounds": cold_rounds},
                       metrics={r["where"]: r["metrics"] for r in rows})
    return report


def _where(report: dict, where: str, through: str) -> dict:
    row = report["variants"][0]
    return {**row, "name": f"{row['variant']} ({where})", "where": where, "through": through,
            "machine": report["machine"], "versions": report["versions"], "threads": report["threads"][0]}


def device_view(report: dict) -> tuple[dict, None]:
    """The table of a device bench: a row per machine (the host, the device)."""
    headers = ["where", "CPU", "cores", "OS", "threads", "quality", "cold start s (min-max)", "speed", "peak RSS MiB"]
    table = []
    for r in rows_of(report):
        m, speed, cold = r.machine, r.speed_at(r.threads), r.cold_start["first_result_s"]
        quality = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in r.metrics.items())
        shown = (f"TTFT {speed.ttft_ms.median:.0f} ms, decode {speed.decode_tokens_per_s.median:.1f} tok/s"
                 if isinstance(speed, Decode) else f"p50 {speed.p50_ms:.2f} ms, p90 {speed.p90_ms:.2f} ms")
        table.append([r.where, m["cpu"], m["cpus"], m["os"], r.threads, quality,
                      f"{cold['median']:.2f} ({cold['min']:.2f}-{cold['max']:.2f})", shown,
                      f"{max(r.peak_rss_bytes.values()) / 2**20:.0f}"])
    return {"headers": headers, "rows": table}, None
