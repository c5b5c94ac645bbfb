"""Pre-flight checks: catch a method config that would silently train the wrong thing.

They run once, after the method is applied and before the first training step:

- `trainable_params`: the trainable count equals what the method's config implies, computed
  from the layers' shapes (LoRA: sum of r·(in+out) over adapted linears, plus out for DoRA's
  magnitude vector, plus the head; IA3: one vector per adapted layer (in for feed-forward
  layers, out otherwise) plus the head; full: every parameter; partial: the top N blocks plus
  everything outside the blocks except embeddings).
- `targets_matched`: every pattern in `target_modules` (and `feedforward_modules`,
  a user-given `modules_to_save`) matched at least one module — peft only complains when *all* miss.
- `adapter_active`: the task loss's gradient reaches the trainable weights outside the output head,
  and one sign-gradient step on them changes the model's output on one training batch. LoRA's B=0
  start makes the first forward identical to the base model, so only a step can show the adapter
  is wired in; the head is left out because it alone would change the output even with a dead
  adapter. The gradient is the task loss's, without a regularizer the method adds: a regularizer's
  gradient reaches a dead adapter's weights too. Where the task's gradient reaches some weight, any
  output change above the noise of two identical forwards passes: near-identity starts move the
  output very little on the first step (AdaLoRA's P·diag(E)·Q with E=0 and small P, Q: ~1e-7 on a
  tiny BERT), yet the gradient shows they are in the forward pass. Where it reaches none, the change
  must also exceed `PROBE_RTOL` of the output's scale. A dead adapter (disabled, zero scaling, not
  in the forward pass) gets no task gradient and leaves the output as it was. The stepped weights
  are copied first and restored bit for bit afterwards, so training is unaffected (at most
  `PROBE_MAX_ELEMENTS` weights, the ones nearest the output, are stepped).
- `quantized_4bit` (quantized methods): every linear layer outside the head is a bitsandbytes
  4-bit layer (except those the model keeps in full precision on purpose, e.g. T5's `wo`).
- `prompt_masking` (instruction task; `tasks.instruction.check_prompt_masking`, run here as one of
  the task's data checks): the tokens carrying loss are each example's response, nothing else.

A failed check raises `PreflightError` with a one-line message; the results (passed or not)
are stored in the record under `preflight`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from peftbench.errors import ModelError
from peftbench.models.heads import TaskLoss, is_head

PROBE_STEP = 1e-2  # size of the sign-gradient step of the activity probe
PROBE_MAX_ELEMENTS = 50_000_000  # most weight elements the probe steps (and copies)
PROBE_RTOL = 1e-6  # smallest output change (relative to max |output|) counted as "changed"

# What to change when a check fails; checks not listed are about the method section.
HINTS = {"prompt_masking": "check data.prompt_template / the target column, and that data.max_length leaves "
                           "room for the response after the prompt"}


class PreflightError(ModelError):
    """A pre-flight check failed: the method config would not train what it says."""

    kind = "preflight"


def _numel(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _head_count(model: Any) -> int:
    """Parameters of the trainable head copies peft keeps (modules_to_save)."""
    total = 0
    for m in model.modules():
        copies = getattr(m, "modules_to_save", None)
        if copies is not None and hasattr(copies, "keys") and "default" in copies:
            total += _numel(copies["default"])
    return total


# ---- expected trainable counts ---------------------------------------------------------------


def _expected_lora(model: Any, config: Any) -> tuple[int, dict[str, Any]]:
    layers = [(n, m) for n, m in model.named_modules()
              if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]
    rank_pattern = dict(getattr(config, "rank_pattern", None) or {})
    use_dora = bool(getattr(config, "use_dora", False))
    lora_bias = bool(getattr(config, "lora_bias", False))
    adapter = 0
    for _, m in layers:
        r = m.r["default"] if rank_pattern else config.r
        adapter += r * (m.in_features + m.out_features)
        adapter += m.out_features if use_dora else 0
        adapter += m.out_features if lora_bias else 0
    bias = 0
    if config.bias == "all":
        bias = sum(p.numel() for n, p in model.named_parameters()
                   if n.endswith(".bias") and not is_head(n) and "lora_" not in n)
    elif config.bias == "lora_only":
        bias = sum(m.get_base_layer().bias.numel() for _, m in layers if m.get_base_layer().bias is not None)
    head = _head_count(model)
    return adapter + bias + head, {"adapted_layers": len(layers), "adapter": adapter, "bias": bias, "head": head,
                                   "formula": "sum r*(in+out) over adapted linears" +
                                              (" + out (DoRA magnitude)" if use_dora else "") + " + head"}


def _expected_ia3(model: Any, config: Any) -> tuple[int, dict[str, Any]]:
    layers = [m for m in model.modules() if hasattr(m, "ia3_l") and "default" in getattr(m, "ia3_l", {})]
    adapter = sum(m.in_features if m.is_feedforward else m.out_features for m in layers)
    head = _head_count(model)
    return adapter + head, {"adapted_layers": len(layers), "adapter": adapter, "head": head,
                            "formula": "sum in (feed-forward) or out (other) over adapted layers + head"}


def _expected_partial(model: Any, params: dict[str, Any], family: Any) -> tuple[int, dict[str, Any]]:
    from peftbench.models.families import find_layer_lists

    blocks = [(f"{n}.{i}", b) for n, ml in find_layer_lists(model, family) for i, b in enumerate(ml)]
    layers = params.get("layers")
    if layers is None:
        layers = max(1, round(len(blocks) * params.get("fraction", 0.5)))
    top = blocks[len(blocks) - layers:]
    names = {n for n, _ in blocks}
    outside = sum(p.numel() for n, p in model.named_parameters()
                  if not any(n.startswith(b + ".") for b in names)
                  and not any(s in n for s in ("embed", "wte", "wpe")) and not n.startswith("shared."))
    in_blocks = sum(_numel(b) for _, b in top)
    return in_blocks + outside, {"layers_trained": layers, "layers_total": len(blocks), "blocks": in_blocks,
                                 "outside_blocks": outside,
                                 "formula": "top N blocks + all non-embedding weights outside the blocks"}


def check_trainable(model: Any, method: Any, params: dict[str, Any], family: Any) -> dict[str, Any]:
    from peftbench.models.loading import count_params

    trainable, total = count_params(model)
    config = model.peft_config["default"] if hasattr(model, "peft_config") else None
    kind = type(config).__name__ if config is not None else method.name
    if kind == "LoraConfig":
        expected, detail = _expected_lora(model, config)
    elif kind == "IA3Config":
        expected, detail = _expected_ia3(model, config)
    elif method.name == "full":
        expected, detail = total, {"formula": "all parameters"}
    elif method.name == "partial":
        expected, detail = _expected_partial(model, params, family)
    else:
        return {"name": "trainable_params", "passed": True, "skipped": True, "actual": trainable,
                "detail": f"no parameter formula for {kind}"}
    ok = expected == trainable and trainable > 0
    return {"name": "trainable_params", "passed": ok, "actual": trainable, "expected": expected, "detail": detail,
            "message": None if ok else f"{trainable} trainable parameters but the {method.name} config implies "
                                       f"{expected} ({detail['formula']})"}


# ---- target patterns --------------------------------------------------------------------------


def _matches(pattern: str, names: list[str], regex: bool) -> bool:
    if regex:
        return any(re.fullmatch(pattern, n) for n in names)
    return any(n == pattern or n.endswith("." + pattern) for n in names)


def check_targets(model: Any, params: dict[str, Any]) -> dict[str, Any]:
    config = model.peft_config["default"] if hasattr(model, "peft_config") else None
    if config is None:
        return {"name": "targets_matched", "passed": True, "skipped": True, "detail": "no adapter config"}
    names = [n for n, _ in model.get_base_model().named_modules() if n]
    unmatched: list[str] = []
    checked: dict[str, list[str]] = {}
    for key in ("target_modules", "feedforward_modules", "modules_to_save"):
        # peft adds its own head names to modules_to_save ('classifier', 'score'); only the user's count.
        value = params.get(key) if key == "modules_to_save" else getattr(config, key, None)
        if not value:
            continue
        if isinstance(value, str):
            checked[key] = [value]
            # A string is a regex to most tuners, a module name to some (adaption prompt's 'self_attn').
            if not (_matches(value, names, regex=True) or _matches(value, names, regex=False)):
                unmatched.append(f"{key}={value!r}")
        else:
            checked[key] = sorted(value)
            unmatched += [f"{key} '{p}'" for p in sorted(value) if not _matches(p, names, regex=False)]
    ok = not unmatched
    return {"name": "targets_matched", "passed": ok, "patterns": checked, "unmatched": unmatched,
            "message": None if ok else f"pattern(s) matched no module in the model: {', '.join(unmatched)}"}


# ---- quantization -----------------------------------------------------------------------------


def check_4bit(model: Any) -> dict[str, Any]:
    import torch

    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return {"name": "quantized_4bit", "passed": False, "message": "bitsandbytes is not installed"}
    from peftbench.models.loading import transformers_model

    # Modules the model itself keeps in full precision (T5's `wo`) or the config skips are meant to stay.
    base = transformers_model(model)
    kept = set(getattr(base, "_keep_in_fp32_modules", None) or [])
    qconfig = getattr(getattr(base, "config", None), "quantization_config", None)
    skip = getattr(qconfig, "llm_int8_skip_modules", None) if qconfig is not None and not isinstance(qconfig, dict) \
        else (qconfig or {}).get("llm_int8_skip_modules")
    kept |= set(skip or [])
    four, other = 0, []
    for name, m in model.named_modules():
        if isinstance(m, Linear4bit):
            four += 1
        elif (isinstance(m, torch.nn.Linear) and not is_head(name + ".w") and "lora_" not in name
              and not kept & set(name.split("."))):
            other.append(name)
    ok = four > 0 and not other
    msg = None
    if not ok:
        msg = ("no 4-bit linear layers in the model" if four == 0
               else f"{len(other)} linear layer(s) are not 4-bit (e.g. '{other[0]}')")
    return {"name": "quantized_4bit", "passed": ok, "linear_4bit": four, "not_4bit": other[:20], "message": msg}


# ---- adapter activity -------------------------------------------------------------------------


def check_active(model: Any, batch: dict[str, Any], autocast_dtype: Any, device: str) -> dict[str, Any]:
    """The task's gradient on the non-head trainable weights, and a step along it (`perturb`), must change
    the output."""
    import torch

    from peftbench.runtime.device import autocast

    body = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not is_head(n)]
    if not body:
        return {"name": "adapter_active", "passed": False, "changed": 0.0,
                "message": "no trainable weights outside the output head: only the head would learn"}
    # The probe keeps a copy of what it steps; for a large full fine-tune, step only the weights
    # nearest the output (up to PROBE_MAX_ELEMENTS), which is enough to show they are wired in.
    stepped, budget = [], PROBE_MAX_ELEMENTS
    for n, p in reversed(body):
        if stepped and p.numel() > budget:
            break
        stepped.append((n, p))
        budget -= p.numel()
    subset = len(stepped) < len(body)
    body = stepped[::-1]
    amp = autocast(device, autocast_dtype)
    was_training = model.training
    model.eval()  # no dropout: the only difference between the two forwards is the step
    saved = [p.detach().clone() for _, p in body]

    def outputs() -> Any:
        with torch.no_grad(), amp:
            return model(**batch).logits.float()

    try:
        before = outputs()
        noise = (outputs() - before).abs().max().item()
        with amp, TaskLoss(model) as task_loss:
            loss = model(**batch).loss
            task = task_loss.take()
        (loss if task is None else task).backward()  # the task's gradient: a regularizer's alone proves nothing
        reached = perturb(body)
        after = outputs()
    finally:
        with torch.no_grad():
            for (_, p), s in zip(body, saved, strict=True):
                p.copy_(s)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    changed = (after - before).abs().max().item()
    # Where the task's gradient reaches the weights, they are in the forward pass, and any change above
    # the measured noise confirms it; without that evidence the change must also clear a relative floor.
    threshold = 10 * noise if reached else max(10 * noise, PROBE_RTOL * max(1.0, before.abs().max().item()))
    ok = changed > threshold
    return {"name": "adapter_active", "passed": ok, "changed": changed, "threshold": threshold,
            "probe_params": len(body), "probe_subset": subset, "gradient_reached": reached,
            "message": None if ok else "one training step on the adapter weights did not change the output "
                                       "(adapter disabled, zero scaling, or not in the forward pass)"}


def perturb(body: list[tuple[str, Any]]) -> int:
    """Step each weight the task's gradient reached by `PROBE_STEP` against its gradient's sign; return
    how many it reached (a weight whose gradient is absent or zero everywhere is not in the forward pass,
    or not yet: LoRA's A while B=0)."""
    import torch

    reached = 0
    with torch.no_grad():
        for _, p in body:
            if p.grad is not None and bool(p.grad.abs().max() > 0):
                reached += 1
                p.add_(torch.sign(p.grad), alpha=-PROBE_STEP)
    return reached


# ---- entry point ------------------------------------------------------------------------------


def run_preflight(model: Any, method: Any, params: dict[str, Any], family: Any, batch: dict[str, Any], *,
                  autocast_dtype: Any, device: str, record: dict[str, Any],
                  data_checks: Callable[[], list[dict[str, Any]]] | None = None,
                  warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every check, store the results in `record['preflight']`, raise on the first failure.

    `data_checks` gives the task's checks of its encoded data (e.g. `check_prompt_masking`);
    `warn` receives the warnings of checks that passed (e.g. a few examples truncated to no response)."""
    t0 = time.perf_counter()
    # Data checks first: a batch without loss tokens also makes the activity probe fail, and the
    # data is then the cause to report.
    checks = data_checks() if data_checks else []
    checks += [check_trainable(model, method, params, family), check_targets(model, params)]
    if method.quantized:
        checks.append(check_4bit(model))
    checks.append(check_active(model, batch, autocast_dtype, device))
    failed = [c for c in checks if not c["passed"]]
    result = {"passed": not failed, "checks": {c.pop("name"): c for c in checks},
              "time_s": time.perf_counter() - t0}
    record["preflight"] = result
    for name, c in result["checks"].items():
        if c.get("warning") and warn is not None:
            warn(f"{name}: {c['warning']}")
    if failed:
        first = failed[0]
        name = next(k for k, c in result["checks"].items() if c is first)
        raise PreflightError(f"pre-flight check failed: {first['message']}",
                             hint=HINTS.get(name, "fix the method section of the spec "
                                                  "(e.g. method.target_modules, method.r)"))
    return result


def probe_batch(task: Any, enc: Any, spec: Any, pad_id: int, device: str) -> dict[str, Any]:
    """The first training batch (at most batch_size examples), on the device."""
    idx = list(range(min(len(enc), spec.train.batch_size)))
    return {k: v.to(device) for k, v in task.collate(enc, idx, pad_id).items()}
