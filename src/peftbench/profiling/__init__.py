"""Cost measurements on synthetic tokens with the model a run would train: `probe.py` (largest batch that
fits) and `profile.py` (tokens/s, memory and latency against length and batch size)."""
