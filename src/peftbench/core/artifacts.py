"""A run's artifact: saved at the end of the run; reloaded (base + adapter) to evaluate it or to merge
it into a standalone model.

A run folder holds `result.json` and what `save_artifact` wrote: `adapter/` (peft
`save_pretrained`, safetensors) for adapter methods, `model/` for full and partial fine-tuning,
`merged/` for `save: merged`. Reloading goes through the same model loader, dtype policy and task
evaluation as the run itself, so a reloaded run reproduces its recorded metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.core.distributed import is_main_process
from peftbench.errors import ModelError, SpecError
from peftbench.records.io import RESULT_FILE, dir_size, parse_record, replace_dir


@dataclass
class TrainedRun:
    record: dict[str, Any]
    spec: RunSpec
    model: Any
    tokenizer: Any
    device: str
    amp_dtype: Any
    is_peft: bool


def save_artifact(model: Any, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Save what the method produces (adapter or full model) and measure its size on disk."""
    if not is_main_process():  # rank 0 saves the (identical) weights
        return {"saved": False, "path": None, "size_bytes": None}

    def _save(target: Path, source: Any = model) -> int:
        # Written aside, then swapped in: a failed save (disk full) never damages an earlier artifact.
        staging = target.with_name(f".{target.name}.saving-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            source.save_pretrained(str(staging), safe_serialization=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_dir(staging, target)
        return dir_size(target)

    if spec.save == "none":
        with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
            return {"saved": False, "path": None, "size_bytes": _save(Path(tmp) / "artifact")}
    if spec.save == "merged" and hasattr(model, "merge_and_unload"):
        target = run_dir / "merged"
        merged = model.merge_and_unload()
        return {"saved": True, "kind": "merged", "path": "merged", "size_bytes": _save(target, merged)}
    kind = "adapter" if hasattr(model, "peft_config") else "model"
    target = run_dir / kind
    return {"saved": True, "kind": kind, "path": kind, "size_bytes": _save(target)}


def load_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The record of a run folder, or a SpecError saying what is missing or malformed."""
    p = Path(run_dir)
    rec, reason = parse_record(p)
    if reason is not None:
        raise SpecError(f"the record of '{run_dir}' {reason}", hint="rerun that run, or pick another (peftbench ls)")
    if rec is None:
        raise SpecError(f"'{run_dir}' holds no readable {RESULT_FILE}",
                        hint="give a run folder, e.g. runs/<run_id> (see: peftbench ls runs/)")
    return rec


def artifact_dir(run_dir: str | Path, record: dict[str, Any]) -> tuple[str, Path]:
    art = record.get("artifact") or {}
    if record.get("status") != "success":
        raise SpecError(f"run '{record.get('run_id')}' did not succeed (status {record.get('status')})",
                        hint="pick a run whose status is success (peftbench ls)")
    if not art.get("saved") or not art.get("path"):
        raise SpecError(f"run '{record.get('run_id')}' saved no adapter or model (save: none)",
                        hint="rerun it with save: adapter")
    path = Path(run_dir) / art["path"]
    if not path.is_dir():
        raise ModelError(f"the saved {art.get('kind', 'artifact')} folder '{path}' is missing",
                         hint="rerun the run with save: adapter")
    check_artifact_files(path, str(art.get("kind")))
    return str(art.get("kind")), path


def check_artifact_files(path: Path, kind: str) -> None:
    """Refuse a saved adapter or model whose files are truncated or damaged (a copy cut short, a disk
    that filled), naming the file, before any model is loaded for it."""
    from peftbench.models.loading import safetensors_problem

    fix = "rerun the run with --force to save it again, or restore the folder from a copy"
    config = path / ("adapter_config.json" if kind == "adapter" else "config.json")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"the saved {kind}'s '{config}' is missing or not readable JSON: "
                         f"{str(err).splitlines()[0][:120]}", hint=fix) from None
    if not isinstance(parsed, dict):
        raise ModelError(f"the saved {kind}'s '{config}' must hold a JSON object", hint=fix)
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"the saved {kind} folder '{path}' holds no weights file (*.safetensors)", hint=fix)
    for file in weights:
        problem = safetensors_problem(file)
        if problem:
            raise ModelError(f"the saved {kind} file '{file}' is truncated or corrupt: {problem}", hint=fix)


def load_saved(load: Any, path: Path, kind: str, *args: Any, **kwargs: Any) -> Any:
    """`load(*args, **kwargs)` for a saved adapter or model, a failure turned into one line naming it
    (files that pass `check_artifact_files` can still disagree with the base model)."""
    try:
        return load(*args, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ModelError(f"cannot load the saved {kind} '{path}': {first}",
                         hint="rerun the run with --force to save it again") from None


def load_trained(run_dir: str | Path, *, dequantize: bool = False, device: str | None = None) -> TrainedRun:
    """Base model + saved adapter (or the saved full model), as the run trained it.

    `dequantize`: for quantized methods (QLoRA), load the 4-bit base and dequantize it before the
    adapter goes on, so that the adapter can be merged into plain weights.
    """
    from peftbench.core.precision import apply_dtype_policy
    from peftbench.methods.base import METHODS
    from peftbench.methods.seed import method_load_kwargs
    from peftbench.models.loading import load_classifier, load_tokenizer, quiet_libraries, resolve_model_path
    from peftbench.runtime.device import pick_device, resolve_dtype

    quiet_libraries()
    record = load_run_record(run_dir)
    if record.get("task") != "classification":
        raise SpecError(f"reloading '{record.get('task')}' runs is not supported yet",
                        hint="only classification runs can be reloaded")
    kind, path = artifact_dir(run_dir, record)
    spec = RunSpec.from_dict(record["spec"])
    method = METHODS.get(spec.method.name)
    params = spec.method.params
    label_names = list((record.get("data") or {}).get("label_names") or [])
    if not label_names:
        raise SpecError(f"run '{record.get('run_id')}' records no label names", hint="rerun it")
    device = device or pick_device(spec.train.device)
    compute_dtype = resolve_dtype(spec.model.dtype, device)
    is_peft = kind == "adapter"
    if is_peft:
        from peft import PeftModel

        load_kwargs = method_load_kwargs(method, params, compute_dtype)
        loaded = load_classifier(spec.model, len(label_names), label_names, load_kwargs)
        base = loaded.model
        if method.quantized:
            if dequantize:
                base = base.dequantize()
            for module in base.modules():  # as in training: keep the packed 4-bit layout backward-free
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
        # is_trainable keeps requires_grad as in training, so the dtype policy treats every tensor alike.
        model = load_saved(PeftModel.from_pretrained, path, kind, base, str(path), is_trainable=True)
        tokenizer = loaded.tokenizer
    else:
        from transformers import AutoModelForSequenceClassification

        model = load_saved(AutoModelForSequenceClassification.from_pretrained, path, kind, str(path),
                           use_safetensors=True)
        tokenizer = load_tokenizer(resolve_model_path(spec.model.name_or_path), spec.model)
    # A merged model is a plain model: no frozen base to hold in low precision.
    method_name = method.name if is_peft or kind == "model" else "full"
    amp_dtype, _ = apply_dtype_policy(model, method_name, compute_dtype)
    model.to(device)
    model.eval()
    return TrainedRun(record, spec, model, tokenizer, device, amp_dtype, is_peft)


def evaluate_run(run_dir: str | Path, data_eval: str | None = None, n_eval: int | None = None) -> dict[str, Any]:
    """Metrics of a saved run on `data_eval` (default: the run's own eval set, same subsample); reads
    no training data (`peftbench.data.eval_split`)."""
    from peftbench.data.eval_split import encode_eval_split
    from peftbench.tasks.base import TASKS, Prepared

    trained = load_trained(run_dir)
    spec = trained.spec
    data, eval_enc, eval_path = encode_eval_split(spec, trained.record, run_dir, trained.tokenizer, data_eval, n_eval)
    task, prepared = TASKS.get(spec.task), Prepared(data, data.info)
    pad_id = trained.tokenizer.pad_token_id or 0
    eval_bs = spec.train.eval_batch_size or spec.train.batch_size * 4
    metrics = task.evaluate(trained.model, eval_enc, prepared, batch_size=eval_bs, device=trained.device,
                            autocast_dtype=trained.amp_dtype, pad_id=pad_id)
    metrics["n_eval"] = len(eval_enc)
    metrics["data_eval"] = eval_path
    return metrics


def merge_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a LoRA/DoRA/IA3/QLoRA adapter into its base and save a standalone model (safetensors)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise SpecError(f"merge output folder '{out}' is not empty", hint="give a new or empty --out folder")
    trained = load_trained(run_dir, dequantize=True, device="cpu")
    if not trained.is_peft:
        raise SpecError(f"run '{trained.record.get('run_id')}' ({trained.spec.method.name}) has no adapter to "
                        "merge: its saved model is already standalone",
                        hint="use the run's saved model folder directly")
    import torch

    merged = trained.model.merge_and_unload()
    for p in merged.parameters():
        if p.is_floating_point() and p.dtype != torch.float32 and trained.spec.model.dtype == "float32":
            p.data = p.data.float()
    if getattr(merged.config, "quantization_config", None) is not None:
        del merged.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    merged.save_pretrained(str(tmp), safe_serialization=True)
    trained.tokenizer.save_pretrained(str(tmp))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def generation_tasks() -> list[str]:
    """The tasks whose models generate text."""
    from peftbench.tasks.base import TASKS

    return [name for name in TASKS.names() if TASKS.get(name).generative]
