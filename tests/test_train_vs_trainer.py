"""peftbench's training loop and the Hugging Face Trainer reach the same weights from the same start.

Same initial weights, same batches in the same order, no dropout, fp32: learning-rate schedule and
warm-up, AdamW, weight-decay groups, clipping and the loss must then agree step for step. A wrong
warm-up length, a missing clip or an off-by-one in the schedule moves the weights far beyond the
tolerance below (the weights move by about 100× the tolerance over the run).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conftest import tiny_spec

torch = pytest.importorskip("torch")


def test_loop_matches_trainer_on_the_same_batches(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from peftbench.config.spec import RunSpec
    from peftbench.core.train import train
    from peftbench.data.batching import make_batches
    from peftbench.methods.base import METHODS, MethodContext
    from peftbench.tasks.base import TASKS

    steps = 12
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "full", lr=1e-3, max_steps=steps, batch_size=8,
                                       warmup_ratio=0.25, weight_decay=0.1, max_grad_norm=0.5)).resolved()
    task, method = TASKS.get(spec.task), METHODS.get("full")
    prepared = task.load_data(spec)
    set_seed(0)
    loaded = task.load_model(spec, prepared, {})
    model = method.prepare(method, spec.method.params, MethodContext(loaded.model, loaded.family, task.peft_task_type))
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    start = copy.deepcopy(model.state_dict())
    tok = loaded.tokenizer
    train_enc, _ = task.encode(loaded, prepared, spec)

    train(model, train_enc, lambda _m: {}, spec.train, device="cpu", autocast_dtype=None,
          pad_id=tok.pad_token_id, progress=False, collate_fn=task.collate)
    ours = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model.load_state_dict(start)
    n = len(train_enc)
    assert steps * spec.train.batch_size <= n, "the run must stay inside the first epoch"
    order = [i for b in make_batches(train_enc.lengths(), spec.train.batch_size, spec.train.seed, True, False)
             for i in b]
    rows = [{"input_ids": train_enc.input_ids[i], "labels": train_enc.labels[i],
             **{k: v[i] for k, v in train_enc.extra.items()}} for i in range(n)]

    class SameOrder(torch.utils.data.Sampler):
        def __iter__(self):  # peftbench's first epoch
            return iter(order)

        def __len__(self) -> int:
            return n

    class SameBatches(Trainer):
        def _get_train_sampler(self, *args: object, **kwargs: object) -> SameOrder:
            return SameOrder()

    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=spec.train.batch_size, learning_rate=spec.train.lr,
        max_steps=steps, warmup_steps=int(spec.train.warmup_ratio * steps), weight_decay=spec.train.weight_decay,
        max_grad_norm=spec.train.max_grad_norm, lr_scheduler_type="linear", use_cpu=True, report_to=[],
        save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
    SameBatches(model=model, args=args, train_dataset=rows,
                data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=8)).train()
    theirs = model.state_dict()

    moved = max((theirs[k] - start[k]).abs().max().item() for k in start if start[k].is_floating_point())
    gap = max((ours[k] - theirs[k]).abs().max().item() for k in ours if ours[k].is_floating_point())
    assert moved > 1e-3  # training did move the weights
    assert gap < moved / 100, f"peftbench's loop and the Trainer diverged: {gap:.2e} (weights moved {moved:.2e})"
