"""Equal tuning budgets: every method searches its own hyper-parameters with the same budget.

`tune: {trials: N}` (or `timeout_s`) gives each method N Optuna trials (TPE sampler, seeded).
Searched: the learning rate, log-uniform in [lr/x, lr·x] around the method's default (or the
spec's) with x = `tune.lr_range`; for LoRA-family methods also `r` (from `tune.ranks`) and
`alpha` = r·ratio (ratio from `tune.alpha_ratios`). Each trial is an ordinary `runner.run` and is
scored on the validation split only (`protocol.selection.validation_metrics`). The best trial's
settings are then run over `tune.seeds` and reported on the test split, next to the spec's own
settings ("defaults") over the same seeds.

Every record made here carries `tuning` (role: trial / default / tuned, the budget, the search
result), and a summary per method is written to `<out>/tune-<method>-<hash>.json`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.errors import SpecError, TrainingError
from peftbench.records.io import RESULT_FILE, atomic_write_json
from peftbench.tasks.metrics import higher_is_better

TRIALS_DIR = "tune-trials"


def search_space(spec: RunSpec) -> dict[str, Any]:
    from peftbench.methods.base import METHODS

    method = METHODS.get(spec.method.name)
    resolved = spec.resolved()
    t = spec.tune
    space: dict[str, Any] = {"lr": {"low": resolved.train.lr / t.lr_range, "high": resolved.train.lr * t.lr_range,
                                    "log": True}}
    if "r" in method.defaults and "alpha" in method.defaults:
        space["r"] = {"choices": list(t.ranks)}
        space["alpha_ratio"] = {"choices": list(t.alpha_ratios)}
    return space


def _suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    params = {"lr": trial.suggest_float("lr", space["lr"]["low"], space["lr"]["high"], log=True)}
    if "r" in space:
        params["r"] = trial.suggest_categorical("r", space["r"]["choices"])
        alpha = params["r"] * trial.suggest_categorical("alpha_ratio", space["alpha_ratio"]["choices"])
        params["alpha"] = int(alpha) if float(alpha).is_integer() else alpha
    return params


def _with(spec: RunSpec, params: dict[str, Any], seed: int | None = None, save: str | None = None) -> RunSpec:
    data = spec.to_dict()
    data["tune"] = None
    if "lr" in params:
        data["train"]["lr"] = params["lr"]
    for key in ("r", "alpha"):
        if key in params:
            data["method"][key] = params[key]
    if seed is not None:
        data["train"]["seed"] = seed
    if save is not None:
        data["save"] = save
    return RunSpec.from_dict(data)


def _annotate(out_dir: Path, record: dict[str, Any], tuning: dict[str, Any]) -> dict[str, Any]:
    """Add the `tuning` field to a finished record (atomically; the record is otherwise untouched)."""
    record = dict(record)
    record.pop("_path", None)
    record["tuning"] = tuning
    atomic_write_json(out_dir / record["run_id"] / RESULT_FILE, record)
    return record


def _score(record: dict[str, Any], metric: str, split: str) -> float:
    if split == "validation":
        sel = record.get("protocol", {}).get("selection", {})
        if sel.get("split") != "validation" or not sel.get("validation_metrics"):
            raise SpecError("tuning needs a validation split, and this run has none",
                            hint="keep data.validation_fraction > 0 or give data.validation")
        values = sel["validation_metrics"]
    else:
        values = record["metrics"]
    if metric not in values:
        raise SpecError(f"tune.metric '{metric}' is not among the run's metrics ({', '.join(values)})",
                        hint="set tune.metric to one of them")
    return float(values[metric])


def _search(spec: RunSpec, out: Path, tune_id: str, space: dict[str, Any], metric: str, budget: dict[str, Any], *,
            progress: bool, log: Any, say: Any) -> tuple[list[dict[str, Any]], float]:
    """The Optuna study: each trial an ordinary run scored on `tune.split`. Returns every trial
    (failed ones included) and the search's seconds."""
    import optuna

    from peftbench.core.runner import run

    t = spec.tune
    assert t is not None
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = _suggest(trial, space)
        trial_spec = _with(spec, params, save="none")
        say(f"[peftbench] {tune_id}: trial {trial.number + 1}/{t.trials} {params}")
        try:
            rec = run(trial_spec, out / TRIALS_DIR, progress=progress, log=log)
        except TrainingError as err:  # a diverging learning rate is a result, not a crash
            trials.append({"number": trial.number, "params": params, "value": None, "state": "failed",
                           "error": err.one_line()})
            return float("nan")
        value = _score(rec, metric, t.split)
        _annotate(out / TRIALS_DIR, rec, {"role": "trial", "tune_id": tune_id, "trial": trial.number,
                                          "params": params, "budget": budget})
        trials.append({"number": trial.number, "params": params, "value": value, "state": "complete",
                       "run_id": rec["run_id"]})
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if higher_is_better(metric) else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=t.sampler_seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=t.trials, timeout=t.timeout_s, catch=())
    return trials, time.perf_counter() - t0


def _run_settings(spec: RunSpec, out: Path, role: str, params: dict[str, Any], seeds: list[int], metric: str,
                  summary: dict[str, Any], *, progress: bool, log: Any, say: Any) -> dict[str, Any]:
    """`params` run over every seed and reported on the test split; each record gets its `tuning`."""
    from peftbench.core.runner import run

    tune_id = summary["tune_id"]
    runs = []
    for seed in seeds:
        say(f"[peftbench] {tune_id}: {role} settings {params}, seed {seed}")
        rec = run(_with(spec, params, seed=seed), out, progress=progress, log=log)
        rec = _annotate(out, rec, {"role": role, "tune_id": tune_id, "params": params, "budget": summary["budget"],
                                   "best_validation": summary["best"]["value"]})
        runs.append({"run_id": rec["run_id"], "seed": seed, "test": rec["metrics"].get(metric),
                     "validation": (rec["protocol"]["selection"].get("validation_metrics") or {}).get(metric)})
    tests = [r["test"] for r in runs if r["test"] is not None]
    return {"params": params, "runs": runs, "split": "test",
            "test_mean": statistics.fmean(tests) if tests else None,
            "test_std": statistics.stdev(tests) if len(tests) > 1 else None}


def tune_method(spec: RunSpec, out_dir: str | Path, *, progress: bool = False, log: Any = None) -> dict[str, Any]:
    """Search, then run the best and the default settings over the seeds; return the summary."""
    from peftbench.tasks.base import TASKS

    if spec.tune is None:
        raise SpecError("the spec has no 'tune:' section", hint="add e.g. tune: {trials: 8}")
    say = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out_dir)
    t = spec.tune
    metric = t.metric or TASKS.get(spec.task).main_metric
    space = search_space(spec)
    seeds = list(t.seeds or [spec.train.seed])
    tune_id = f"tune-{spec.method.name}-" + hashlib.sha256(
        json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    budget = {"trials": t.trials, "timeout_s": t.timeout_s, "metric": metric, "split": t.split,
              "sampler": "optuna TPESampler", "sampler_seed": t.sampler_seed}
    trials, search_s = _search(spec, out, tune_id, space, metric, budget, progress=progress, log=log, say=say)
    done = [x for x in trials if x["state"] == "complete"]
    if not done:
        raise TrainingError(f"{tune_id}: every trial failed", reason="tune_failed",
                            hint="narrow tune.lr_range or check the spec with `peftbench run` first")
    best = (max if higher_is_better(metric) else min)(done, key=lambda x: x["value"])
    resolved = spec.resolved()
    default_params = {"lr": resolved.train.lr}
    if "r" in space:
        default_params.update(r=resolved.method.params["r"], alpha=resolved.method.params["alpha"])
    summary: dict[str, Any] = {
        "tune_id": tune_id, "method": spec.method.name, "metric": metric, "split": t.split,
        "test_selection": t.split == "test",
        "budget": {**budget, "trials_run": len(trials), "trials_complete": len(done), "search_time_s": search_s},
        "search_space": space, "trials": trials,
        "best": {"params": best["params"], "value": best["value"], "run_id": best["run_id"]},
    }
    for role, params in (("default", default_params), ("tuned", best["params"])):
        summary[role] = _run_settings(spec, out, role, params, seeds, metric, summary,
                                      progress=progress, log=log, say=say)
    atomic_write_json(out / f"{tune_id}.json", summary)
    return summary


def tune_methods(spec: RunSpec, methods: list[str], out_dir: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """The same budget for each method in turn; one summary per method."""
    results = []
    for name in methods:
        data = spec.to_dict()
        data["method"] = {"name": name, **{k: v for k, v in data["method"].items()
                                           if k != "name" and name == spec.method.name}}
        results.append(tune_method(RunSpec.from_dict(data), out_dir, **kwargs))
    return results
