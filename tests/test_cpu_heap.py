"""While a CPU run trains, freed large tensors stay in the heap: reused without page faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from peftbench.perf.cpu_heap import _glibc, retained_heap

# In a fresh process, so that the heap holds nothing left over from other tests. Blocks above
# glibc's largest mmap threshold (32 MiB), as the attention tensors of a real training step are;
# each a little smaller than the last, so that it fits in the block freed before it.
CHURN = """
import json, resource, torch
from peftbench.perf.cpu_heap import retained_heap

def churn(sizes_mib):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for mib in sizes_mib:
        x = torch.empty(mib << 20, dtype=torch.uint8)
        x.fill_(1)  # touch every page
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with retained_heap("cpu") as section:
    churn([64])  # the heap grows to hold it
    inside = churn([63, 62, 61])
outside = churn([60, 59, 58])
print(json.dumps({"section": section, "inside": inside, "outside": outside}))
"""


@pytest.mark.skipif(_glibc() is None, reason="the retained heap needs glibc on Linux")
def test_freed_blocks_are_reused_inside_and_returned_after() -> None:
    proc = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["section"]["retained"] is True and got["section"]["restored"] is True
    # After the scope, glibc's own behaviour: a fresh mmap (or pages handed back), faulted in every
    # round. 4 KiB pages make about 15,000 faults a round; even with transparent huge pages on, 29.
    assert got["outside"] >= 3 * 29
    # Inside, the freed block is reused with its pages still in place: (almost) no faults at all.
    assert got["inside"] * 20 <= got["outside"], got


def test_not_used_off_the_cpu_or_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    with retained_heap("cuda") as section:
        assert section == {"retained": False, "reason": "not used on cuda"}
    with retained_heap("cpu", enabled=False) as section:
        assert section == {"retained": False, "reason": "train.cpu_ops is false"}
    import peftbench.perf.cpu_heap as cpu_heap

    monkeypatch.setattr(cpu_heap.platform, "libc_ver", lambda: ("musl", "1.2"))
    with retained_heap("cpu") as section:
        assert section["retained"] is False and "needs glibc on Linux" in section["reason"]
