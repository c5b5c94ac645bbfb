"""Speed and its accounting: FLOPs, MFU and threads (`flops.py`), CPU attention and dropout (`cpu_ops.py`),
the retained heap, the first-token last layer (`head_token.py`) and packed batches (`packing.py`)."""
