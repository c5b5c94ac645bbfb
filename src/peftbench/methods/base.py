"""The method registry and what every method shares: each fine-tuning method is one entry.

An entry names its own defaults, learning rate included (adapter methods need 10-100x the
learning rate of full fine-tuning; one shared learning rate is the classic unfair comparison),
and a `prepare` function that turns a loaded model into the model to train. Keys in the spec's
method section that are not ours go through unchanged to the method's `peft` config class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from peftbench.errors import ModelError, SpecError
from peftbench.registry import Registry, did_you_mean


@dataclass
class MethodContext:
    """What a method needs to adapt a model."""

    model: Any
    family: Any  # models.families.Family
    peft_task_type: str  # the task's peft TaskType name (SEQ_CLS, SEQ_2_SEQ_LM, CAUSAL_LM)
    compute_dtype: str = "float32"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    default_lr: float
    defaults: dict[str, Any]
    prepare: Callable[[Method, dict[str, Any], MethodContext], Any]
    peft_config: str | None = None  # peft config class whose fields may be passed through
    key_map: dict[str, str] = field(default_factory=dict)  # our key -> peft config key
    quantized: bool = False
    families: tuple[str, ...] = ("encoder", "seq2seq", "decoder")

    def peft_fields(self) -> list[str]:
        if not self.peft_config:
            return []
        import peft

        cls = getattr(peft, self.peft_config)
        internal = {"peft_type", "task_type", "base_model_name_or_path", "revision", "auto_mapping",
                    "inference_mode"}
        return [f.name for f in dataclasses.fields(cls) if f.name not in internal]

    def valid_keys(self) -> list[str]:
        return sorted(set(self.defaults) | set(self.peft_fields()))

    def check_params(self, params: dict[str, Any]) -> None:
        unknown = [k for k in params if k not in self.defaults]
        if not unknown:
            return
        valid = self.valid_keys()
        bad = [k for k in unknown if k not in valid]
        if bad:
            key = bad[0]
            raise SpecError(
                f"unknown key 'method.{key}' for method '{self.name}'.{did_you_mean(key, valid)}",
                hint=f"valid keys: {', '.join(valid)}",
            )

    def resolve_params(self, params: dict[str, Any]) -> dict[str, Any]:
        self.check_params(params)
        out = dict(self.defaults)
        out.update(params)
        for key in ("r", "alpha"):
            if key in out and out[key] is not None and (not isinstance(out[key], int | float) or out[key] <= 0):
                raise SpecError(f"invalid value for 'method.{key}': must be a positive number (got {out[key]!r})",
                                hint=f"set e.g. --set method.{key}=8")
        check_param_values(out)
        return out


class MethodRegistry(Registry[Method]):
    """The method registry: names are case-insensitive (`VeRA` is `vera`), and every `PeftType` the
    installed peft defines is a method by its lower-case name. Those are registered on first need
    (an unknown name, or a listing), so that resolving a spec of a known method imports no peft."""

    def __init__(self) -> None:
        super().__init__("method")
        self.loaders: list[Callable[[MethodRegistry], None]] = []

    def registered(self) -> list[str]:
        """The names registered so far, without loading the peft types."""
        return super().names()

    def load_all(self) -> None:
        while self.loaders:
            self.loaders.pop(0)(self)

    def get(self, name: str) -> Method:
        key = str(name).strip().lower()
        if not super().__contains__(key):
            self.load_all()
        return super().get(key)

    def __contains__(self, name: object) -> bool:
        key = str(name).strip().lower()
        if not super().__contains__(key):
            self.load_all()
        return super().__contains__(key)

    def names(self) -> list[str]:
        self.load_all()
        return super().names()

    def items(self) -> list[tuple[str, Method]]:
        self.load_all()
        return super().items()

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        return super().__iter__()


METHODS = MethodRegistry()

# The six methods of the seed studies, in the order tables and the demo show them.
SEED_METHODS = ("full", "partial", "lora", "qlora", "ia3", "dora")


# The adapter keys `check_param_values` checks in peftbench's terms, whatever the method (LoRA's peft
# config names two of them `lora_alpha` and `lora_dropout`).
SHARED_KEYS = ("r", "alpha", "dropout", "target_modules", "feedforward_modules")


def check_param_values(params: dict[str, Any]) -> None:
    """Shared adapter keys (`SHARED_KEYS`), checked when the spec is resolved rather than deep inside peft."""
    import math

    def bad(key: str, need: str, example: str) -> SpecError:
        return SpecError(f"invalid value for 'method.{key}': must be {need} (got {params[key]!r})",
                         hint=f"set e.g. --set method.{key}={example}")

    r = params.get("r")
    if r is not None and (isinstance(r, bool) or not isinstance(r, int)):
        raise bad("r", "a positive integer", "8")
    alpha = params.get("alpha")
    if alpha is not None and (isinstance(alpha, bool) or not math.isfinite(alpha)):
        raise bad("alpha", "a positive finite number", "16")
    dropout = params.get("dropout")
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, int | float)
                                or not 0 <= dropout < 1):
        raise bad("dropout", "a number in [0, 1)", "0.1")
    for key in ("target_modules", "feedforward_modules"):  # peft takes a name pattern or a list of names
        value = params.get(key)
        if value is not None and not isinstance(value, str) and not (
                isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)):
            raise bad(key, "'auto', 'all-linear', a module-name pattern or a list of module names", "[query,value]")


# ---- helpers shared by the adapter methods ----------------------------------------------------


def resolve_targets(value: Any, default: tuple[str, ...] | None, ctx: MethodContext) -> Any:
    from peftbench.models.families import linear_module_names

    if value in (None, "auto"):
        return list(default) if default else linear_module_names(ctx.model)
    if value == "all-linear":
        return linear_module_names(ctx.model)
    return value


def wrap_peft(config: Any, ctx: MethodContext) -> Any:
    from peft import get_peft_model

    try:
        return get_peft_model(ctx.model, config)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as err:
        first = next(iter(str(err).splitlines()), type(err).__name__)
        msg = first[:300]
        # peft says "Target modules {...} not found in the base model" for a target list that matches
        # nothing, and "No modules were targeted" when exclusions empty it; a long list pushes the
        # wording past the cut, so the whole line is searched.
        if "not found in the base model" in first or "No modules were targeted" in first:
            raise ModelError(f"target modules matched nothing in the model: {msg}",
                             hint="set method.target_modules to module names that exist, or 'auto'") from None
        raise ModelError(f"method cannot apply to this model: {msg}",
                         hint="pick a method that supports this architecture (peftbench methods)") from None


def settled_kwargs(cls: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` for the peft config class `cls`: a null value means the config's own default (as
    `train.lr: null` means the method's), and every other value must fit the field's annotation, so
    that a wrong type is a spec error naming the key instead of an exception deep in peft."""
    import dataclasses
    import typing

    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: peft checks the values itself
        hints = {}
    settled, problems = {}, []
    for key, value in kwargs.items():
        field = fields.get(key)
        if value is None and field is not None and (field.default is not None or
                                                    field.default_factory is not dataclasses.MISSING):
            continue
        settled[key] = value
        if key.removeprefix("lora_") in SHARED_KEYS or key not in hints:  # checked in peftbench's terms:
            continue  # peft's annotations are narrower (an `int` alpha)
        if not _fits(hints[key], value):
            wanted = hints[key].__name__ if isinstance(hints[key], type) else str(hints[key]).replace("typing.", "")
            problems.append(f"method.{key}={value!r} is not of the type {cls.__name__} takes ({wanted})")
    if problems:
        head = "" if len(problems) == 1 else f"{len(problems)} problems in the method section: "
        raise SpecError((head + "; ".join(problems))[:600],
                        hint="give each setting a value of the type shown, or leave it out for the default")
    return settled


def _fits(annotation: Any, value: Any) -> bool:
    """Whether `value` fits a peft config field's annotation, as pydantic reads it (an int fits a float);
    True where the annotation is beyond pydantic."""
    from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError

    try:
        adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except PydanticUserError:  # a dataclass or model (peft's runtime_config): peft wants an instance
        return not isinstance(annotation, type) or isinstance(value, annotation)
    except Exception:  # a type pydantic cannot check
        return True
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def make_config(cls_name: str, ctx: MethodContext, kwargs: dict[str, Any]) -> Any:
    import peft

    cls = getattr(peft, cls_name)
    kwargs = settled_kwargs(cls, kwargs)
    try:
        return cls(task_type=ctx.peft_task_type, **kwargs)
    except (TypeError, ValueError) as err:
        raise SpecError(f"invalid {cls_name} settings: {str(err).splitlines()[0][:300]}",
                        hint="check the method section of the spec") from None
