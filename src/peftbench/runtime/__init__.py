"""The machine a run computes on: device choice and precision rule; the signals that cancel a run."""
