"""Faults: bench workers that die, a run folder another run holds, Ctrl-C in every stage, and a
bug in edgeft itself. Each ends in a clear message and loses nothing that was finished."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import classification_recipe, default_sigint, write_recipe

from edgeft import EdgeftError
from edgeft.benchkit.plan import BenchPlan, run_plan
from edgeft.cli import cli

RUNNERS = {"steady": "crashing_runners:Steady", "segfault": "crashing_runners:Segfault",
           "killed": "crashing_runners:Killed", "oom": "crashing_runners:OutOfMemory",
           "noload": "crashing_runners:FailsToLoad"}


def test_a_dying_worker_fails_its_own_model_and_the_others_keep_their_results(tmp_path):
    specs = {f"{name}@1": {"runner": runner, "folder": str(tmp_path / name), "threads": 1}
             for name, runner in RUNNERS.items()}
    plan = BenchPlan(models=[(n, tmp_path, {}) for n in RUNNERS], specs=specs, build=lambda r: {},
                     quality={n: (f"{n}@1", ("quality", {})) for n in RUNNERS},
                     score=lambda name, reply: {"value": reply["value"]},
                     speed={key: [("speed", {})] for key in specs})
    results = run_plan(plan, rounds=3, pause=0)
    assert results.quality == {"steady": {"value": 1.0}, "killed": {"value": 1.0}}
    assert [r[0]["call"] for r in results.timings["steady@1"]] == [1, 2, 3]
    assert results.timings["killed@1"] == []
    assert results.failed["segfault"] == "died: killed by signal 11 (SIGSEGV) (a crash in native code)"
    assert results.failed["killed"] == "died: killed by signal 9 (SIGKILL) (out of memory, or killed)"
    assert results.failed["oom"].startswith("failed: MemoryError")
    assert results.failed["noload"] == f"failed: FileNotFoundError: {tmp_path / 'noload'}/model.onnx " \
                                       f"(FileNotFoundError: {tmp_path / 'noload'}/model.onnx)"
    assert "steady" not in results.failed and results.peaks["steady@1"] > 0


def test_bench_stage_names_the_dead_variant_and_writes_the_others(cls_run, tmp_path, monkeypatch):
    from edgeft.classification.task import TASK
    from edgeft.stages.bench import bench

    run_dir, recipe, _ = cls_run
    planned = TASK.bench_plan

    def plan_with_a_crash(*args):
        plan = planned(*args)
        plan.specs["int4@1"]["runner"] = RUNNERS["killed"]
        return plan

    monkeypatch.setattr(TASK, "bench_plan", plan_with_a_crash)
    with pytest.raises(EdgeftError) as err:
        bench(recipe, [run_dir], tmp_path / "bench", progress=False)
    assert str(err.value).startswith("bench: the worker for int4 died: killed by signal 9 (SIGKILL)")
    assert f"The other models' results are in {tmp_path / 'bench' / 'report.json'}" in str(err.value)
    report = json.loads((tmp_path / "bench/report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["int4"]["error"].startswith("died: killed by signal 9") and "metrics" not in rows["int4"]
    assert rows["int8-dynamic"]["metrics"]["accuracy"] == next(
        v for v in json.loads((run_dir / "bench/report.json").read_text())["variants"]
        if v["name"] == "int8-dynamic")["metrics"]["accuracy"]
    assert "failed: died: killed by signal 9" in (tmp_path / "bench/report.md").read_text()
    assert report["failed"] == {"int4": rows["int4"]["error"]}


def test_a_second_run_on_a_held_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    from edgeft.core.lock import run_lock

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "run" / ".edgeft.lock"
        lock.parent.mkdir()
        lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        result = CliRunner().invoke(cli, ["run", "-o", str(tmp_path / "run")])
        assert result.exit_code == 2
        assert f"run folder {tmp_path / 'run'} is in use by another edgeft run (lock {lock}, process id " \
               f"{holder.pid})" in result.output
        assert json.loads(lock.read_text())["pid"] == holder.pid  # the other run's lock is left alone
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "run") as path:  # its process is gone now: the lock is stale
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_bug_in_edgeft_is_an_internal_error_with_its_traceback_in_a_log(tmp_path, monkeypatch, tiny_bert):
    import edgeft.stages.data as data

    def broken(*args, **kwargs):
        return {}["missing key"]

    monkeypatch.setattr(data, "prepare_data", broken)
    recipe = write_recipe(tmp_path / "r.yaml", classification_recipe(tiny_bert))
    result = CliRunner().invoke(cli, ["data", "-r", str(recipe), "-o", str(tmp_path / "out" / "data")])
    assert result.exit_code == 1
    log = tmp_path / "out" / "edgeft-error.log"
    assert "internal error: KeyError: 'missing key'" in result.output and f"traceback is in {log}" in result.output
    assert 'return {}["missing key"]' in log.read_text()


def edgeft_run(*args):
    return subprocess.Popen([sys.executable, "-m", "edgeft.cli", "run", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def interrupt_at(proc, stage: str, timeout: float = 300) -> str:
    """Send Ctrl-C as soon as the run announces `stage`; return what it printed."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.strip() == f"== {stage}":
            proc.send_signal(signal.SIGINT)  # at once: some stages take a fraction of a second here
            break
    _, rest = proc.communicate(timeout=120)
    return "".join(seen) + rest


def test_ctrl_c_in_every_stage_then_the_next_run_continues(tmp_path, tiny_bert):
    recipe = classification_recipe(tiny_bert, tune={"max_steps": 40, "checkpoint_every": 5},
                                   bench={"iterations": 4, "rounds": 1})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    run_dir = tmp_path / "run"
    stages = ["data", "tune", "merge", "export optimum", "quantize optimum", "bench", "package"]
    for i, stage in enumerate(stages):
        proc = edgeft_run(path, "-o", run_dir)
        out = interrupt_at(proc, stage)
        assert proc.returncode == 130 and "interrupted: finished stages are kept" in out, out[-2000:]
        assert f"   {stage}: done in" not in out  # stopped inside that stage
        for done in stages[:i]:
            assert f"   {done}: up to date, skipped" in out or f"   {done}: done in" in out, (stage, done)
        assert not any(p.name.endswith(".partial") and p.name != "tune.partial" for p in run_dir.rglob("*"))
        assert not (run_dir / ".edgeft.lock").exists()
    final = edgeft_run(path, "-o", run_dir)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-2000:]
    summary = json.loads((run_dir / "run.json").read_text())
    assert set(summary["skipped"]) >= {"data", "tune", "merge", "export optimum"}
    assert (run_dir / "package/manifest.json").exists() and not (run_dir / "tune.partial").exists()
    shutil.rmtree(run_dir)
