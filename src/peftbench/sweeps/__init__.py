"""Many runs: a sweep runs each run in its own process and resumes after a crash (`engine.py`), on this
machine or on Ray (`executors.py`); `tune.py` gives every method the same search budget."""
