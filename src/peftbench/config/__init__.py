"""Configuration as data: the typed run spec (`spec.py`), the sweep file (`sweep.py`) and multi-run spec
files (`multirun.py`), each validated in full before anything loads."""
