"""Encoder-decoder summarization: teacher-forced training; eval loss and ROUGE of generated text."""

from __future__ import annotations

from typing import Any, ClassVar

from peftbench.data.batching import Encoded, collate_lm
from peftbench.data.text_pairs import encode_seq2seq
from peftbench.models.embedded import EMBEDDED_SEQ2SEQ
from peftbench.runtime.device import autocast
from peftbench.runtime.progress import batch_starts
from peftbench.tasks.base import Prepared
from peftbench.tasks.generative import GenerativeTask, loss_sum
from peftbench.tasks.metrics import ROUGE_TYPES, rouge_scores


class SummarizationTask(GenerativeTask):
    """Encoder-decoder summarization: teacher-forced training, eval loss + ROUGE of generated text."""

    name = "summarization"
    kind = "seq2seq"
    peft_task_type = "SEQ_2_SEQ_LM"
    main_metric = "rougeL"
    metrics: ClassVar[dict[str, bool]] = {"eval_loss": False, **dict.fromkeys(ROUGE_TYPES, True)}
    model_description = "encoder-decoder"
    tiny_family = "t5"
    embedded_model = EMBEDDED_SEQ2SEQ

    def encode_texts(self, tok: Any, sources: list[str], targets: list[str], spec: Any) -> Encoded:
        return encode_seq2seq(tok, sources, targets, spec.data.max_length, spec.data.max_target_length)

    def evaluate(self, model: Any, enc: Encoded, prepared: Prepared, *, batch_size: int, device: str,
                 autocast_dtype: Any, pad_id: int) -> dict[str, Any]:
        import torch

        gen = prepared.data.generation
        num_beams, max_new = (gen.num_beams, gen.max_new_tokens) if gen else (1, 64)
        extra = {"no_repeat_ngram_size": gen.no_repeat_ngram_size} if gen and gen.no_repeat_ngram_size else {}
        n_gen = min(len(enc), gen.n_examples or len(enc)) if gen else len(enc)
        tok = prepared.data.tokenizer
        model.eval()
        order = sorted(range(len(enc)), key=lambda i: len(enc.input_ids[i]))
        with torch.inference_mode(), autocast(device, autocast_dtype):
            loss, tokens = loss_sum(model, enc, order, batch_size, device, pad_id, shift=False)
            gen_order = sorted(range(n_gen), key=lambda i: len(enc.input_ids[i]))
            texts = [""] * n_gen
            new_tokens = 0
            for start in batch_starts(n_gen, batch_size, "generating"):
                idx = gen_order[start:start + batch_size]
                batch = collate_lm(enc, idx, pad_id)
                out = model.generate(input_ids=batch["input_ids"].to(device),
                                     attention_mask=batch["attention_mask"].to(device),
                                     num_beams=num_beams, max_new_tokens=max_new, do_sample=False, **extra)
                for i, text in zip(idx, tok.batch_decode(out, skip_special_tokens=True), strict=True):
                    texts[i] = text.strip()
                new_tokens += int((out[:, 1:] != pad_id).sum())  # after the decoder start token
        model.train()
        refs = prepared.data.eval_targets[:n_gen]
        eval_loss = loss / max(1, tokens)
        return {"eval_loss": eval_loss, **rouge_scores(texts, refs), "eval_tokens": tokens,
                "n_generated": n_gen, "gen_len": new_tokens / max(1, n_gen),
                "num_beams": num_beams, "max_new_tokens": max_new,
                "predictions": {"pred": texts, "gold": refs}}

    def per_example_scores(self, predictions: Any, base_predictions: Any) -> tuple[list[float], list[float]] | None:
        """Per-example ROUGE of the tuned and the base model's summaries against the same references."""
        from peftbench.tasks.metrics import rouge_per_example

        if not (isinstance(predictions, dict) and isinstance(base_predictions, dict)):
            return None
        refs = predictions.get("gold")
        if refs != base_predictions.get("gold") or not refs:
            return None
        return (rouge_per_example(predictions["pred"], refs, self.main_metric),
                rouge_per_example(base_predictions["pred"], refs, self.main_metric))
