"""Typed run specs: one section per concern (model, data, method, train, select...), validated early.

A spec comes from YAML, from CLI flags, or from Python; `--set a.b=c` addresses any key by its
dotted path. All problems are reported together in one line, with a did-you-mean for unknown
keys, before anything heavy is imported or trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from peftbench.config.dotted import apply_overrides, deep_merge, load_yaml, parse_override, set_dotted
from peftbench.config.evaluation import check_lm_eval
from peftbench.config.problems import method_problems, raise_problems, validation_problems
from peftbench.data.hub import hub_text_from_mapping, looks_like_hub_id, parse_hub_id
from peftbench.errors import SpecError
from peftbench.models.embedded import EMBEDDED_MODEL
from peftbench.tasks import TASKS

# The dict helpers live in config.dotted; they are imported from here by older callers.
__all__ = ["RunSpec", "apply_overrides", "deep_merge", "load_yaml", "parse_override", "set_dotted"]

TaskName = Literal[tuple(TASKS.names())]  # type: ignore[valid-type]  # the registered tasks, in order
SEED_MAX = 2**32 - 1  # numpy's and torch's seeding take 0 .. 2**32-1


def _not_bool(value: Any) -> Any:
    # YAML and --set read `true` as a boolean, which pydantic would take as the number 1.
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean, not a number")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
def _seed_range(value: int) -> int:
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"a seed is an integer from 0 to {SEED_MAX} (numpy and torch refuse others)")
    return value


Seed = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_seed_range)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class ModelSpec(_Section):
    name_or_path: str = EMBEDDED_MODEL
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    family: str = "auto"
    revision: str | None = None
    allow_pickle: bool = False
    allow_missing_weights: bool = False  # train parameters the checkpoint lacks from random values


class DataSpec(_Section):
    """Data files (local paths or hub data sets, see `peftbench.data.hub`) and how they are read."""

    preset: str | None = None
    train: str | None = None
    eval: str | None = None
    validation: str | None = None  # selection split; carved from train when absent
    test: str | None = None  # the reported split (data.eval is the same role under its older name)
    validation_fraction: Float = Field(default=0.1, ge=0, lt=1)
    n_validation: Int | None = Field(default=None, gt=0)
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    labels: list[str] | None = None
    n_train: Int | None = Field(default=None, gt=0)
    n_eval: Int | None = Field(default=None, gt=0)
    max_length: Int = Field(default=128, gt=0)
    seed: Seed = 0
    # Generative tasks (summarization, instruction): the target text and how prompts are built.
    target_column: str | None = None
    max_target_length: Int = Field(default=128, gt=0)
    prompt_template: str | None = None

    @field_validator("train", "eval", "validation", "test", mode="before")
    @classmethod
    def _hub_mapping(cls, v: Any) -> Any:
        """`{hub: ID, config: ..., split: ..., revision: ...}` is stored as its string form; a hub id
        written as a string is checked for that form."""
        try:
            if isinstance(v, dict):
                return hub_text_from_mapping(v)
            if isinstance(v, str) and looks_like_hub_id(v) and not os.path.exists(v):
                parse_hub_id(v)
        except SpecError as err:
            raise ValueError(err.one_line()) from None
        return v


class MethodSpec(BaseModel):
    """`name` plus method-specific keys; those are checked against the method's own list."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "lora"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainSpec(_Section):
    epochs: Int = Field(default=3, gt=0)
    batch_size: Int = Field(default=16, gt=0)
    eval_batch_size: Int | None = Field(default=None, gt=0)
    lr: Float | None = Field(default=None, gt=0)
    weight_decay: Float = Field(default=0.0, ge=0)
    warmup_ratio: Float = Field(default=0.06, ge=0, lt=1)
    grad_accum: Int = Field(default=1, gt=0)
    max_grad_norm: Float | None = Field(default=1.0, gt=0)
    max_steps: Int | None = Field(default=None, gt=0)
    seed: Seed = 42
    log_every: Int = Field(default=10, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    group_by_length: bool = False  # faster, but can cost accuracy: see docs/performance.md
    length_group_batches: Int = Field(default=50, gt=1)  # batches per length-sorted mega-batch when grouping
    packing: bool = False  # each batch packed into fewer rows, almost no padding (perf.packing)
    num_threads: Int | None = Field(default=None, gt=0)
    compile: bool = False
    head_token_only: bool = True  # classification: the last layer computes only the token the head reads (perf.head_token)
    cpu_ops: bool = True  # CPU training: faster dropout / attention-with-dropout (perf.cpu_ops), retained heap (perf.cpu_heap)
    peak_tflops: Float | None = Field(default=None, gt=0)


class SelectSpec(_Section):
    """Which epoch's weights are reported: the last, or the best on the selection split."""

    strategy: Literal["last", "best"] = "last"
    metric: str | None = None  # default: the task's main metric (direction: tasks.metrics.higher_is_better)
    split: Literal["validation", "test"] = "validation"
    patience: Int | None = Field(default=None, gt=0)  # early stopping after N epochs without improvement


class TuneSpec(_Section):
    """Equal hyper-parameter search budget per method (Optuna), scored on the validation split."""

    trials: Int = Field(default=8, gt=0)
    timeout_s: Float | None = Field(default=None, gt=0)
    metric: str | None = None
    split: Literal["validation", "test"] = "validation"
    lr_range: Float = Field(default=10.0, gt=1)  # lr searched log-uniformly in [default/x, default*x]
    ranks: list[Int] = Field(default_factory=lambda: [4, 8, 16, 32])
    alpha_ratios: list[Float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    sampler_seed: Seed = 0
    seeds: list[Seed] | None = None  # final runs of the default and the best settings (default: [train.seed])


class RetentionSpec(_Section):
    """Data to measure forgetting on: probe accuracy (labelled files) and representation drift for
    encoders; language-modelling loss for causal LMs (instruction task). `lm_eval_tasks`: general
    lm-evaluation-harness tasks whose base-vs-tuned drop is reported beside them (causal LMs)."""

    file: str | None = None
    lm_eval_tasks: list[str] | None = None  # names as in evaluation.lm_eval.tasks
    text_column: str = "text"
    label_column: str | None = "label"
    n: Int = Field(default=400, gt=3)
    probe_fraction: Float = Field(default=0.5, gt=0, lt=1)


class LmEvalSpec(_Section):
    """lm-evaluation-harness tasks scored on the base and the tuned model (`peftbench[lmeval]`,
    docs/lm_eval.md): task names shipped with peftbench, task YAML files, or lm-eval's own task names."""

    tasks: list[str] = Field(default_factory=list)
    num_fewshot: Int | None = Field(default=None, ge=0)  # None: each task's own default
    limit: Int | None = Field(default=None, gt=0)  # the first N items of each task
    batch_size: Int = Field(default=16, gt=0)


class EvaluationSpec(_Section):
    """Evaluations beyond the task's own metrics, run after training."""

    lm_eval: LmEvalSpec | None = None


class GenerationSpec(_Section):
    """Decoding settings for metrics computed from generated text (ROUGE for summarization)."""

    num_beams: Int = Field(default=1, gt=0)
    max_new_tokens: Int = Field(default=64, gt=0)
    n_examples: Int | None = Field(default=None, gt=0)  # generate for the first N eval examples only
    no_repeat_ngram_size: Int = Field(default=0, ge=0)  # 0: off; 3 is the usual guard against loops


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
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
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
        spec, problems = None, []
        try:
            spec = cls.model_validate(data)
        except ValidationError as err:
            problems += [SpecError(message) for message in validation_problems(err, cls)]
        if spec is not None:
            problems += method_problems(spec.method.name, spec.method.params)
            for check in (spec.check_selection_split, spec.check_retention, spec.check_packing,
                          lambda: check_lm_eval(spec)):
                try:
                    check()
                except SpecError as err:
                    problems.append(err)
        elif isinstance(data.get("method", {}), dict):  # the method keys of an invalid spec, checked too
            method = dict(data.get("method") or {})
            name = method.pop("name", "lora")
            params = {k: v for k, v in method.items() if isinstance(k, str)}  # other keys: pydantic said so
            problems += method_problems(name, params) if isinstance(name, str) else []
        raise_problems(problems)
        assert spec is not None
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

    def with_absolute_paths(self) -> RunSpec:
        """The same spec with each local file or folder it names (data files, the retention file, the
        model folder) as an absolute path: a record's spec then works from any folder. Hub ids and
        names that are no local path stay as written."""
        data = self.to_dict()
        for key in DATA_FILE_KEYS:
            data["data"][key] = absolute_if_local(data["data"][key])
        if data.get("retention"):
            data["retention"]["file"] = absolute_if_local(data["retention"]["file"])
            if data["retention"].get("lm_eval_tasks"):
                data["retention"]["lm_eval_tasks"] = [_task_yaml(t) for t in data["retention"]["lm_eval_tasks"]]
        if data["evaluation"].get("lm_eval"):
            data["evaluation"]["lm_eval"]["tasks"] = [_task_yaml(t) for t in data["evaluation"]["lm_eval"]["tasks"]]
        data["model"]["name_or_path"] = absolute_if_local(data["model"]["name_or_path"])
        return RunSpec.from_dict(data)

    # ---- method-aware checks ------------------------------------------------------------

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
        """Stable id: readable prefix plus a hash of the resolved spec. A local data file counts by its
        content, not its path (the same file typed from another folder, as a record stores it, or in a
        moved project is the same run; new content is a new run); a local model folder by its
        absolute path."""
        resolved = self.resolved().to_dict()
        resolved.pop("report_to", None)  # where a run is logged does not change the run
        if not resolved["train"].get("group_by_length"):  # unused without grouping: not part of the run
            resolved["train"].pop("length_group_batches", None)
        if not resolved["train"].get("packing"):  # off (the default): not part of the id
            resolved["train"].pop("packing", None)
        if not resolved["model"].get("allow_missing_weights"):  # off (the default): ids of earlier runs hold
            resolved["model"].pop("allow_missing_weights", None)
        if not resolved["evaluation"].get("lm_eval"):  # nothing asked (the default): ids of earlier runs hold
            resolved.pop("evaluation")
        if resolved.get("retention") and not resolved["retention"].get("lm_eval_tasks"):
            resolved["retention"].pop("lm_eval_tasks", None)
        resolved["_data_sha256"] = data_file_digests(resolved["data"])
        for key, digest in resolved["_data_sha256"].items():
            if digest is not None:
                resolved["data"][key] = "local file"
        if resolved.get("retention") and resolved["retention"].get("file"):
            resolved["_data_sha256"]["retention"] = file_sha256(resolved["retention"]["file"])
            if resolved["_data_sha256"]["retention"] is not None:
                resolved["retention"]["file"] = "local file"
        resolved["model"]["name_or_path"] = absolute_if_local(resolved["model"]["name_or_path"])
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


def _task_yaml(entry: str) -> str:
    """An lm-eval task entry that is a local YAML file as an absolute path; a task name unchanged."""
    return absolute_if_local(entry) if entry.endswith((".yaml", ".yml")) else entry


def absolute_if_local(value: Any) -> Any:
    """An existing local path as an absolute one (symlinks kept as named); anything else unchanged."""
    if isinstance(value, str) and value and os.path.exists(value):
        return os.path.abspath(value)
    return value
