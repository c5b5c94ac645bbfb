"""Reading, splitting and encoding data: tables and presets (`readers.py`), classification sets, text pairs,
validation and test splits (`splits.py`), batches (`batching.py`), the shared token cache and the demo's data."""
