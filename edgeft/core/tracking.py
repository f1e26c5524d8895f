"""Optional experiment tracking: with `edgeft run --track mlflow` (or `tracking.mlflow: true` in the
recipe) every stage of the run logs its settings, metrics and outputs to MLflow, through MLflow's
own client (`pip install 'edgeft[track]'`).

One MLflow run per `edgeft run` (the recipe's fields as its params), one child run per stage: the
stage's config as params, every number of its metrics, its seconds, whether it was skipped as up to
date, and its manifest (the bench's reports: JSON, CSV, Markdown, HTML, plot) as artifacts. The
store defaults to `mlruns/` inside the run folder; `tracking.uri` names another (a server, or a
database with the full `mlflow` package).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from edgeft.runtime.errors import EdgeftError
from edgeft.runtime.files import MANIFEST, REPORT_JSON, RunLayout

MISSING = ("tracking with MLflow needs its client, an optional extra: pip install 'edgeft[track]' (or drop --track "
           "mlflow / tracking.mlflow from the recipe)")
MAX_PARAM = 500  # characters of one logged setting


def flatten(value, prefix: str = "", numbers_only: bool = False, depth: int = 5) -> dict:
    """Nested dicts as {"a.b.c": leaf}; lists are left out (predictions, per-example scores)."""
    out = {}
    if isinstance(value, dict) and depth:
        for key, item in value.items():
            if not str(key).startswith("_"):
                out.update(flatten(item, f"{prefix}{key}.", numbers_only, depth - 1))
    elif isinstance(value, bool) or value is None or isinstance(value, (list, tuple)):
        if not numbers_only and not isinstance(value, (list, tuple)):
            out[prefix[:-1]] = value
    elif isinstance(value, (int, float)):
        out[prefix[:-1]] = value
    elif not numbers_only:
        out[prefix[:-1]] = str(value)[:MAX_PARAM]
    return out


def report_numbers(report: dict) -> dict:
    """A bench report's numbers by variant: its metrics, size, and each speed entry (by thread count)."""
    rows = {v["name"]: {"metrics": v.get("metrics", {}), "size_bytes": v.get("size_bytes"),
                        **{kind: {f"{e['threads']}t": e for e in v.get(kind, [])} for kind in ("latency", "decode")}}
            for v in report.get("variants", [])}
    return flatten(rows, numbers_only=True)


class NoTracking:
    def stage(self, name: str, result, seconds: float, skipped: bool) -> None:
        pass

    def close(self, ok: bool) -> None:
        pass


class MlflowTracking:
    def __init__(self, recipe, run_dir: Path):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise EdgeftError(MISSING) from None
        self.Metric, self.Param = Metric, Param
        uri = recipe.tracking.uri or RunLayout(run_dir).mlflow.resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps the folder store in maintenance mode; it needs no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(uri)
        name = recipe.tracking.experiment or recipe.name
        found = self.client.get_experiment_by_name(name)
        self.experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.parent = self.client.create_run(self.experiment, run_name=f"{recipe.name}",
                                             tags={"edgeft.run_dir": str(Path(run_dir).resolve())}).info.run_id
        self.log(self.parent, flatten(recipe.model_dump(mode="json")), {})

    def log(self, run_id: str, params: dict, metrics: dict) -> None:
        import time

        now = int(time.time() * 1000)
        params = [self.Param(k, str(v)[:MAX_PARAM]) for k, v in params.items()]
        metrics = [self.Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for start in range(0, max(len(params), len(metrics)), 100):
            self.client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100])

    def stage(self, name: str, result, seconds: float, skipped: bool) -> None:
        run = self.client.create_run(self.experiment, run_name=name, tags={"mlflow.parentRunId": self.parent,
                                                                           "edgeft.skipped": str(skipped)})
        run_id = run.info.run_id
        results = [r for r in (result if isinstance(result, list) else [result]) if r is not None]
        for one in results:  # the stage's manifests
            tag = f"{one.variant}." if len(results) > 1 else ""  # several variants share the stage's run
            report = Path(one.folder) / REPORT_JSON
            metrics = (report_numbers(json.loads(report.read_text())) if one.stage == "bench" and report.is_file()
                       else flatten(one.metrics, numbers_only=True))
            self.log(run_id, flatten(one.config, tag), {f"{tag}{k}": v for k, v in metrics.items()})
            for path in [*sorted(Path(one.folder).glob("report.*")), Path(one.folder) / MANIFEST]:
                if path.is_file():  # the manifest, and a bench's reports
                    self.client.log_artifact(run_id, str(path), artifact_path=tag.rstrip(".") or None)
        self.log(run_id, {}, {"seconds": seconds})
        self.client.set_terminated(run_id)

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.parent, "FINISHED" if ok else "FAILED")


def tracker(recipe, run_dir: Path, track: str | None = None):
    """The tracker `edgeft run` reports its stages to: MLflow when asked, else nothing."""
    return MlflowTracking(recipe, run_dir) if (track == "mlflow" or recipe.tracking.mlflow) else NoTracking()
