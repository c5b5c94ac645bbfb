"""Typed run specs: one section per concern (model, data, method, train, select...), validated early.

A spec comes from YAML, from CLI flags, or from Python; `--set a.b=c` addresses any key by its
dotted path. All problems are reported together in one line, with a did-you-mean for unknown
keys, before anything heavy is imported or trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from peftbench.config.yaml_safe import clip, load_text, safe_load
from peftbench.errors import SpecError
from peftbench.models.embedded import EMBEDDED_MODEL
from peftbench.registry import did_you_mean
from peftbench.tasks import TASKS

TaskName = Literal[tuple(TASKS.names())]  # type: ignore[valid-type]  # the registered tasks, in order


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class ModelSpec(_Section):
    name_or_path: str = EMBEDDED_MODEL
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    family: str = "auto"
    revision: str | None = None
    allow_pickle: bool = False


class DataSpec(_Section):
    preset: str | None = None
    train: str | None = None
    eval: str | None = None
    validation: str | None = None  # selection split; carved from train when absent
    test: str | None = None  # the reported split (data.eval is the same role under its older name)
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    n_validation: int | None = Field(default=None, gt=0)
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    labels: list[str] | None = None
    n_train: int | None = Field(default=None, gt=0)
    n_eval: int | None = Field(default=None, gt=0)
    max_length: int = Field(default=128, gt=0)
    seed: int = 0
    # Generative tasks (summarization, instruction): the target text and how prompts are built.
    target_column: str | None = None
    max_target_length: int = Field(default=128, gt=0)
    prompt_template: str | None = None


class MethodSpec(BaseModel):
    """`name` plus method-specific keys; those are checked against the method's own list."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "lora"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainSpec(_Section):
    epochs: int = Field(default=3, gt=0)
    batch_size: int = Field(default=16, gt=0)
    eval_batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    grad_accum: int = Field(default=1, gt=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    seed: int = 42
    log_every: int = Field(default=10, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    group_by_length: bool = False  # faster, but can cost accuracy: see docs/performance.md
    length_group_batches: int = Field(default=50, gt=1)  # batches per length-sorted mega-batch when grouping
    packing: bool = False  # each batch packed into fewer rows, almost no padding (perf.packing)
    num_threads: int | None = Field(default=None, gt=0)
    compile: bool = False
    head_token_only: bool = True  # classification: the last layer computes only the token the head reads (perf.head_token)
    cpu_ops: bool = True  # CPU training: faster dropout / attention-with-dropout (perf.cpu_ops), retained heap (perf.cpu_heap)
    peak_tflops: float | None = Field(default=None, gt=0)


class SelectSpec(_Section):
    """Which epoch's weights are reported: the last, or the best on the selection split."""

    strategy: Literal["last", "best"] = "last"
    metric: str | None = None  # default: the task's main metric (direction: tasks.metrics.higher_is_better)
    split: Literal["validation", "test"] = "validation"
    patience: int | None = Field(default=None, gt=0)  # early stopping after N epochs without improvement


class TuneSpec(_Section):
    """Equal hyper-parameter search budget per method (Optuna), scored on the validation split."""

    trials: int = Field(default=8, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    metric: str | None = None
    split: Literal["validation", "test"] = "validation"
    lr_range: float = Field(default=10.0, gt=1)  # lr searched log-uniformly in [default/x, default*x]
    ranks: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    alpha_ratios: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    sampler_seed: int = 0
    seeds: list[int] | None = None  # final runs of the default and the best settings (default: [train.seed])


class RetentionSpec(_Section):
    """Data to measure forgetting on: probe accuracy (labelled files) and representation drift for
    encoders; language-modelling loss for causal LMs (instruction task)."""

    file: str
    text_column: str = "text"
    label_column: str | None = "label"
    n: int = Field(default=400, gt=3)
    probe_fraction: float = Field(default=0.5, gt=0, lt=1)


class GenerationSpec(_Section):
    """Decoding settings for metrics computed from generated text (ROUGE for summarization)."""

    num_beams: int = Field(default=1, gt=0)
    max_new_tokens: int = Field(default=64, gt=0)
    n_examples: int | None = Field(default=None, gt=0)  # generate for the first N eval examples only
    no_repeat_ngram_size: int = Field(default=0, ge=0)  # 0: off; 3 is the usual guard against loops


class RunSpec(_Section):
    """One run: a model, a data set, a method and a training recipe."""

    name: str | None = None
    task: TaskName = "classification"
    save: Literal["adapter", "merged", "none"] = "adapter"
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    select: SelectSpec = Field(default_factory=SelectSpec)
    allow_test_selection: bool = False
    retention: RetentionSpec | None = None
    tune: TuneSpec | None = None
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("run name may hold only letters, digits, '.', '_' and '-', up to 100 characters "
                             "(no '/' or '..')")
        return v

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        if not isinstance(data, dict):
            raise SpecError(
                f"a spec must be a mapping of sections, got {type(data).__name__}",
                hint="start the file with keys such as 'model:', 'data:', 'method:', 'train:'",
            )
        try:
            json.dumps(data, default=str)
        except (ValueError, RecursionError):
            raise SpecError("the spec holds a value that contains itself (a YAML alias loop such as '&a [*a]')",
                            hint="write the value out instead of referring to it") from None
        try:
            spec = cls.model_validate(data)
        except ValidationError as err:
            raise SpecError(format_validation_error(err, cls)) from None
        spec.check_method_keys()
        spec.check_selection_split()
        spec.check_retention()
        spec.check_packing()
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> RunSpec:
        data = load_yaml(path)
        return cls.from_dict(apply_overrides(data, overrides or []))

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["method"] = {"name": self.method.name, **self.method.params}
        return out

    def with_overrides(self, overrides: list[str]) -> RunSpec:
        return RunSpec.from_dict(apply_overrides(self.to_dict(), overrides))

    # ---- method-aware checks ------------------------------------------------------------

    def check_method_keys(self) -> None:
        from peftbench.methods.base import METHODS

        method = METHODS.get(self.method.name)
        method.check_params(self.method.params)

    def check_selection_split(self) -> None:
        on_test = [k for k, v in (("select.split", self.select.split),
                                  ("tune.split", self.tune.split if self.tune else None)) if v == "test"]
        if on_test and not self.allow_test_selection:
            raise SpecError(f"'{on_test[0]}: test' selects on the test split, which makes its numbers optimistic",
                            hint="select on 'validation', or set allow_test_selection: true (the record is flagged)")

    def check_retention(self) -> None:
        """Forgetting is measured only for tasks that declare it (`Task.supports_retention`)."""
        task = TASKS.get(self.task)
        if self.retention is not None and not task.supports_retention:
            supported = " and ".join(name for name, t in TASKS.items() if t.supports_retention)
            raise SpecError(f"retention: is not supported for task '{self.task}' ({task.model_description} models)",
                            hint=f"remove the retention section; forgetting is measured for {supported} runs")

    def check_packing(self) -> None:
        if self.train.packing and not TASKS.get(self.task).supports_packing:
            packable = ", ".join(f"'{name}'" for name, t in TASKS.items() if t.supports_packing)
            raise SpecError(f"train.packing is built for task {packable}, not '{self.task}'",
                            hint="set train.packing: false")
        if self.train.packing and self.train.compile:  # the packed loss calls the model's parts, not its forward
            raise SpecError("train.packing and train.compile cannot be combined: compiling wraps the model's "
                            "forward, which packed batches do not call", hint="set one of them to false")

    def resolved(self) -> RunSpec:
        """Fill every default a method brings (its own learning rate included)."""
        from peftbench.methods.base import METHODS

        method = METHODS.get(self.method.name)
        data = self.to_dict()
        data["method"] = {"name": method.name, **method.resolve_params(self.method.params)}
        if data["train"]["lr"] is None:
            data["train"]["lr"] = method.default_lr
        return RunSpec.from_dict(data)

    def run_id(self) -> str:
        """Stable id: readable prefix plus a hash of the resolved spec."""
        resolved = self.resolved().to_dict()
        resolved.pop("report_to", None)  # where a run is logged does not change the run
        if not resolved["train"].get("group_by_length"):  # unused without grouping: not part of the run
            resolved["train"].pop("length_group_batches", None)
        if not resolved["train"].get("packing"):  # off (the default): not part of the id
            resolved["train"].pop("packing", None)
        # Same path, new content must be a new run: the data files' content is part of the id.
        resolved["_data_sha256"] = data_file_digests(resolved["data"])
        if resolved.get("retention"):
            resolved["_data_sha256"]["retention"] = file_sha256(resolved["retention"]["file"])
        blob = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        prefix = self.name or self.method.name
        return f"{prefix}-{digest}"


# ---- helpers ---------------------------------------------------------------------------------

DATA_FILE_KEYS = ("train", "eval", "validation", "test")


def data_file_digests(data: dict[str, Any]) -> dict[str, str | None]:
    """Content hashes of a data section's local files (train, eval, validation, test), by key."""
    return {k: file_sha256(v) for k, v in sorted(data.items()) if k in DATA_FILE_KEYS and isinstance(v, str)}


def file_sha256(path: str) -> str | None:
    """Content hash of a local file; None for hub ids. Not cached by mtime: a rewrite within the
    file system's timestamp resolution would go unseen."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file '{path}' does not exist", hint="check the path given to --config")
    try:
        data = load_text(p.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise SpecError(f"spec file '{path}' is not UTF-8 text", hint="save it as UTF-8") from None
    if data is None:
        raise SpecError(f"spec file '{path}' is empty", hint="add at least a 'method:' section")
    if not isinstance(data, dict):
        raise SpecError(f"spec file '{path}' must hold a mapping, got {type(data).__name__}",
                        hint="write 'key: value' lines at the top level")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.lr=2e-4' → (['train', 'lr'], 0.0002). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise SpecError(f"malformed --set '{clip(item)}': expected KEY=VALUE", hint="write e.g. --set train.lr=2e-4")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SpecError(f"malformed --set '{clip(item)}': empty key", hint="write e.g. --set method.r=16")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise SpecError(f"malformed --set '{clip(item)}': value is not valid YAML",
                        hint="quote strings, e.g. --set model.name_or_path='my/model'") from None
    if isinstance(value, str):
        value = _maybe_number(value)
    return key.split("."), value


def _maybe_number(text: str) -> Any:
    # YAML 1.1 reads '2e-4' as a string; users mean a number.
    try:
        return float(text) if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", text) else text
    except ValueError:
        return text


def set_dotted(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"cannot set '{'.'.join(path)}': '{part}' is not a section",
                            hint="check the dotted key")
        node = child
    node[path[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        set_dotted(out, path, value)
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested keys override only themselves (a shallow merge would drop sibling keys)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _model_for(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def format_validation_error(err: ValidationError, root: type[BaseModel]) -> str:
    parts = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(x) for x in loc)
        if e["type"] == "extra_forbidden":
            owner = _model_for(loc, root)
            known = list(owner.model_fields) if owner else []
            hint = did_you_mean(str(loc[-1]), known)
            valid = f" Valid keys: {', '.join(known)}." if known else ""
            parts.append(f"unknown key '{key}'.{hint}{valid}")
        elif e["type"] == "model_type" or e["type"] == "dict_type":
            parts.append(f"'{key or 'spec'}' must be a mapping of keys, got {e.get('input')!r}")
        else:
            parts.append(f"invalid value for '{key}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(parts)
