"""Qualitative comparisons of saved runs: classification disagreements, side-by-side generations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.errors import DataError, SpecError

SOURCE_KEY = "text"  # the column a prompt line fills where the run used its source texts as they are


def _short(run_dir: str | Path, record: dict[str, Any]) -> str:
    return str(record.get("run_id") or Path(run_dir).name)


def eval_texts(record: dict[str, Any]) -> list[str] | None:
    """The eval texts of a classification run, in prediction order (the subsample is seeded), or None
    when the data files are gone."""
    from peftbench.data.classification import load_classification

    try:
        data = load_classification(RunSpec.from_dict(record["spec"]).data)
    except (DataError, SpecError, KeyError):
        return None
    texts = data.eval_texts
    if data.eval_pairs:
        texts = [f"{a} [SEP] {b}" for a, b in zip(texts, data.eval_pairs, strict=True)]
    if list(data.eval_labels) != list((record.get("predictions") or {}).get("gold") or []):
        return None  # the files changed since the run: texts would not line up
    return texts


def disagreements(run_dirs: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Eval examples on which the runs' predictions differ: (run names, rows with text, gold, preds)."""
    from peftbench.core.artifacts import load_run_record

    if len(run_dirs) < 2:
        raise SpecError("disagreements needs at least two runs", hint="give two or more run folders")
    records = [load_run_record(d) for d in run_dirs]
    names = [_short(d, r) for d, r in zip(run_dirs, records, strict=True)]
    for name, rec in zip(names, records, strict=True):
        if rec.get("task") != "classification" or not (rec.get("predictions") or {}).get("pred"):
            raise SpecError(f"run '{name}' has no classification predictions (status {rec.get('status')})",
                            hint="compare successful classification runs")
    golds = [rec["predictions"]["gold"] for rec in records]
    if any(g != golds[0] for g in golds[1:]):
        raise SpecError("the runs were evaluated on different eval sets (gold labels differ)",
                        hint="compare runs that share data.eval, data.n_eval and data.seed")
    labels = (records[0].get("data") or {}).get("label_names") or []
    texts = eval_texts(records[0])

    def name_of(i: int) -> str:
        return labels[i] if 0 <= i < len(labels) else str(i)

    rows = []
    for i, gold in enumerate(golds[0]):
        preds = [rec["predictions"]["pred"][i] for rec in records]
        if len(set(preds)) > 1:
            row = {"index": str(i), "text": texts[i] if texts else "(eval texts unavailable)", "gold": name_of(gold)}
            row.update({n: name_of(p) + ("" if p == gold else " ✗") for n, p in zip(names, preds, strict=True)})
            rows.append(row)
    return names, rows


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line (blank lines skipped); `\\n` inside a line stands for a newline."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"prompts file '{path}' does not exist", hint="give a text file with one prompt per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"prompts file '{path}' is not UTF-8 text", hint="save it as UTF-8") from None
    prompts = [line.replace("\\n", "\n") for line in lines if line.strip()]
    if not prompts:
        raise DataError(f"prompts file '{path}' holds no prompts", hint="write one prompt per line")
    return prompts


def template_fields(template: str) -> list[str]:
    """The column names a prompt template's `{column}` placeholders name, in order, each once."""
    import string

    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    return list(dict.fromkeys(names))


def prompt_row(prompt: str, layout: str, template: str | None, number: int) -> dict[str, Any]:
    """The data row a prompt line stands for: the template's one column (or the Dolly instruction)
    holds the line; a line written as a JSON object gives several columns at once."""
    fields = template_fields(template) if template else ["instruction"] if layout == "dolly" else [SOURCE_KEY]
    if (template or layout == "dolly") and prompt.lstrip().startswith("{"):
        try:
            row = json.loads(prompt)
        except ValueError:
            row = None
        if isinstance(row, dict):
            missing = [f for f in fields if f not in row]
            if missing:
                raise DataError(f"prompt {number} has no key '{missing[0]}' (keys: {', '.join(map(str, row))})",
                                hint=f"give the keys {', '.join(fields)}")
            return row
    if len(fields) <= 1:
        return dict.fromkeys(fields, prompt)
    raise DataError(f"prompt {number} is plain text, but the run's data.prompt_template names "
                    f"{len(fields)} columns ({', '.join(fields)})",
                    hint="write that prompt as a JSON object on one line with those keys, e.g. "
                         + json.dumps(dict.fromkeys(fields, "...")))


def run_prompts(record: dict[str, Any], prompts: list[str]) -> list[str]:
    """The prompts as the run's training formatted its sources: its prompt template or the Dolly
    prompt (`data.text_pairs.format_source`, the very function training used), else as they are."""
    from peftbench.data.text_pairs import format_source

    data = RunSpec.from_dict(record["spec"]).data
    template = data.prompt_template
    layout = str((record.get("data") or {}).get("layout") or ("template" if template else "prompt/completion"))
    return [format_source(prompt_row(p, layout, template, i + 1), layout, template, SOURCE_KEY, "the prompts file")
            for i, p in enumerate(prompts)]


def prompt_ids(task: Any, tokenizer: Any, source: str, spec: RunSpec) -> list[int]:
    """The token ids the model saw for `source` in training: the task's own encoding, without the
    target (the encoder input of a seq2seq model; BOS and the prompt of a causal LM)."""
    from peftbench.data.batching import IGNORE_INDEX

    enc = task.encode_texts(tokenizer, [source], [""], spec)
    if task.kind == "seq2seq":
        return list(enc.input_ids[0])
    labels = enc.extra["labels"][0]
    return [t for t, lab in zip(enc.input_ids[0], labels, strict=True) if lab == IGNORE_INDEX]


def load_generator(run_dir: str | Path, device: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, record) of a generation run: the base model loaded as the run loaded it
    (the task's loader, so the embedded-* stand-ins too) with its saved adapter, or its saved model."""
    from peftbench.core.artifacts import artifact_dir, generation_tasks, load_run_record, load_saved
    from peftbench.methods.base import METHODS
    from peftbench.methods.seed import method_load_kwargs
    from peftbench.models.embedded import embedded_model_path
    from peftbench.models.generative import EMBEDDED_BUILDERS
    from peftbench.models.loading import load_tokenizer, quiet_libraries, resolve_model_path
    from peftbench.runtime.device import pick_device, resolve_dtype
    from peftbench.tasks.base import TASKS

    quiet_libraries()
    record = load_run_record(run_dir)
    if record.get("task") not in generation_tasks():
        raise SpecError(f"run '{record.get('run_id')}' is a {record.get('task')} run: it does not generate text",
                        hint=f"give runs of a generation task ({', '.join(generation_tasks())}); for classification "
                             "use peftbench disagreements")
    kind, path = artifact_dir(run_dir, record)
    spec = RunSpec.from_dict(record["spec"])
    device = device or pick_device(spec.train.device)
    if kind == "adapter":
        from peft import PeftModel

        kwargs = method_load_kwargs(METHODS.get(spec.method.name), spec.method.params,
                                    resolve_dtype(spec.model.dtype, device))
        loaded = TASKS.get(spec.task).load_model(spec, None, kwargs)
        model, tokenizer = load_saved(PeftModel.from_pretrained, path, kind, loaded.model, str(path)), loaded.tokenizer
    else:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = AutoConfig.from_pretrained(str(path))
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = load_saved(auto.from_pretrained, path, kind, str(path), use_safetensors=True)
        name = spec.model.name_or_path
        base = str(embedded_model_path()) if name in EMBEDDED_BUILDERS else resolve_model_path(name)
        tokenizer = load_tokenizer(base, spec.model)
    model.to(device)
    model.eval()
    return model, tokenizer, record


def generate_ids(model: Any, tokenizer: Any, inputs: list[list[int]], *, max_new_tokens: int = 64,
                 device: str = "cpu") -> list[list[int]]:
    """Greedy decoding, one prompt at a time (no padding effects): the new token ids of each.
    The model gets what its forward takes (input ids and attention mask), never the tokenizer's
    other outputs (`token_type_ids`, which seq2seq models refuse)."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    outs = []
    for ids in inputs:
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad_id)
        new = out[0, 1:] if is_seq2seq else out[0, input_ids.shape[1]:]  # seq2seq: after the decoder start
        outs.append(new.tolist())
    return outs


def side_by_side(run_dirs: list[str], prompts: list[str], *, max_new_tokens: int = 64, device: str | None = None
                 ) -> tuple[list[str], list[dict[str, str]], list[dict[str, Any]]]:
    """Each run's greedy output for each prompt, same decoding settings for all, each prompt formatted
    and encoded as the run's training did: (run names, rows, per run what the model saw and said)."""
    import gc

    from peftbench.tasks.base import TASKS

    names: list[str] = []
    runs: list[dict[str, Any]] = []
    for d in run_dirs:
        model, tokenizer, record = load_generator(d, device=device)
        spec = RunSpec.from_dict(record["spec"])
        task = TASKS.get(spec.task)
        ids = [prompt_ids(task, tokenizer, source, spec) for source in run_prompts(record, prompts)]
        new_ids = generate_ids(model, tokenizer, ids, max_new_tokens=max_new_tokens,
                               device=str(next(model.parameters()).device))
        outputs = [tokenizer.decode(new, skip_special_tokens=True).strip() for new in new_ids]
        names.append(_short(d, record))
        runs.append({"run": names[-1], "run_dir": str(d), "model_inputs": [tokenizer.decode(i) for i in ids],
                     "input_ids": ids, "outputs": outputs, "output_ids": new_ids})
        del model
        gc.collect()
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"prompt": prompt}
        row.update({r["run"]: r["outputs"][i] for r in runs})
        rows.append(row)
    return names, rows, runs
