"""Run records on disk: atomic writes and tolerant reading (`io.py`), field accessors and labels that never
raise (`fields.py`), the one failure-record builder (`failure.py`) and the JSON Schemas (`schema/`)."""
