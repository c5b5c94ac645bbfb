"""Loading models: families and their layer layout (`families.py`), head names (`heads.py`), loading with
safe defaults (`loading.py`), the bundled MiniLM stand-ins (`embedded.py`, `generative.py`) and tiny random models."""
