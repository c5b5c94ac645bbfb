"""Evaluations beyond a task's own metrics: lm-evaluation-harness tasks on the base and the tuned model."""
