"""A run's artifact: saved at the end of the run; reloaded (base + adapter) to evaluate it or to merge
it into a standalone model.

A run folder holds `result.json` and what `save_artifact` wrote: `adapter/` (peft
`save_pretrained`, safetensors) for adapter methods, `model/` for full and partial fine-tuning,
`merged/` for `save: merged`. Reloading goes through the same model loader, dtype policy and task
evaluation as the run itself, so a reloaded run reproduces its recorded metrics.
"""

from __future__ import annotations

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
                        hint="give a run folder, e.g. --run runs/<run_id> (see: peftbench ls runs/)")
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
    return str(art.get("kind")), path


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
        model = PeftModel.from_pretrained(base, str(path), is_trainable=True)
        tokenizer = loaded.tokenizer
    else:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(str(path), use_safetensors=True)
        tokenizer = load_tokenizer(resolve_model_path(spec.model.name_or_path), spec.model)
    # A merged model is a plain model: no frozen base to hold in low precision.
    method_name = method.name if is_peft or kind == "model" else "full"
    amp_dtype, _ = apply_dtype_policy(model, method_name, compute_dtype)
    model.to(device)
    model.eval()
    return TrainedRun(record, spec, model, tokenizer, device, amp_dtype, is_peft)


def evaluate_run(run_dir: str | Path, data_eval: str | None = None, n_eval: int | None = None) -> dict[str, Any]:
    """Metrics of a saved run on `data_eval` (default: the run's own eval set, same subsample)."""
    from peftbench.tasks.base import TASKS

    trained = load_trained(run_dir)
    spec = trained.spec
    label_names = trained.record["data"]["label_names"]
    data = spec.to_dict()["data"]
    data["labels"] = label_names  # the run's label order, whatever the new file holds
    if data_eval and Path(data_eval).resolve() != Path(str(spec.data.eval)).resolve():
        data["eval"] = data_eval
        data["n_eval"] = n_eval
    elif n_eval:
        data["n_eval"] = n_eval
    spec = spec.model_copy(update={"data": spec.data.model_validate(data)})
    task = TASKS.get(spec.task)
    prepared = task.load_data(spec)
    from peftbench.models.loading import LoadedModel

    loaded = LoadedModel(trained.model, trained.tokenizer, None, "", "")
    _, eval_enc = task.encode(loaded, prepared, spec)
    pad_id = trained.tokenizer.pad_token_id or 0
    eval_bs = spec.train.eval_batch_size or spec.train.batch_size * 4
    metrics = task.evaluate(trained.model, eval_enc, prepared, batch_size=eval_bs, device=trained.device,
                            autocast_dtype=trained.amp_dtype, pad_id=pad_id)
    metrics["n_eval"] = len(eval_enc)
    metrics["data_eval"] = str(spec.data.eval)
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


def load_generator(run_dir: str | Path, device: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, record) of a generation run: seq2seq or causal LM base + saved adapter."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from peftbench.methods.base import METHODS
    from peftbench.methods.seed import method_load_kwargs
    from peftbench.models.loading import check_weights, load_tokenizer, quiet_libraries, resolve_model_path
    from peftbench.runtime.device import pick_device, resolve_dtype

    quiet_libraries()
    record = load_run_record(run_dir)
    if record.get("task") not in generation_tasks():
        raise SpecError(f"run '{record.get('run_id')}' is a {record.get('task')} run: it does not generate text",
                        hint=f"give runs of a generation task ({', '.join(generation_tasks())}); for classification "
                             "use peftbench disagreements")
    kind, path = artifact_dir(run_dir, record)
    spec = RunSpec.from_dict(record["spec"])
    device = device or pick_device(spec.train.device)
    base_path = resolve_model_path(spec.model.name_or_path)
    tokenizer = load_tokenizer(base_path, spec.model)
    if kind == "adapter":
        check_weights(base_path, spec.model.allow_pickle)
        config = AutoConfig.from_pretrained(base_path, trust_remote_code=spec.model.trust_remote_code)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        method = METHODS.get(spec.method.name)
        kwargs = method_load_kwargs(method, spec.method.params, resolve_dtype(spec.model.dtype, device))
        base = auto.from_pretrained(base_path, trust_remote_code=spec.model.trust_remote_code,
                                    use_safetensors=not spec.model.allow_pickle, **kwargs)
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(path))
    else:
        config = AutoConfig.from_pretrained(str(path))
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(str(path), use_safetensors=True)
    model.to(device)
    model.eval()
    return model, tokenizer, record


def generate_texts(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = 64,
                   device: str = "cpu") -> list[str]:
    """Greedy decoding, one prompt at a time (no padding effects): only the new tokens, decoded."""
    import torch

    outs = []
    is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt").to(device)
        with torch.inference_mode():
            ids = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        new = ids[0] if is_seq2seq else ids[0, enc["input_ids"].shape[1]:]
        outs.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return outs
