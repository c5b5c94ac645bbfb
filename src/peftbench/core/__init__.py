"""One run from spec to record: the runner's phases (`runner.py`), the training loop (`train.py`), precision,
artifacts, trackers, data-parallel helpers and child processes (`isolate.py`)."""
