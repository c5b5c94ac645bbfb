"""Qualitative comparisons of saved runs: classification disagreements, side-by-side generations."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.errors import DataError, SpecError


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


def markdown(rows: list[dict[str, str]], max_text: int = 80) -> str:
    if not rows:
        return "(none)\n"
    headers = list(rows[0])

    def cell(h: str, v: str) -> str:
        v = v.replace("|", "\\|").replace("\n", " ")
        return v[: max_text - 1] + "…" if h == "text" and len(v) > max_text else v

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(h, r.get(h, "")) for h in headers) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


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


def side_by_side(run_dirs: list[str], prompts: list[str], *, max_new_tokens: int = 64,
                 device: str | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """Each run's greedy output for each prompt, same decoding settings for all: (run names, rows)."""
    import gc

    from peftbench.core.artifacts import generate_texts, load_generator

    names: list[str] = []
    columns: list[list[str]] = []
    for d in run_dirs:
        model, tokenizer, record = load_generator(d, device=device)
        names.append(_short(d, record))
        columns.append(generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                      device=str(next(model.parameters()).device)))
        del model
        gc.collect()
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"prompt": prompt}
        row.update({n: col[i] for n, col in zip(names, columns, strict=True)})
        rows.append(row)
    return names, rows
