"""utils.cpu_malloc: freed tensors stay with the process, so the next training step reuses them.

Each case runs in a fresh interpreter: the resident size of this test process depends on every test before it.
"""
import json
import subprocess
import sys

import pytest

from DiffIR.utils.cpu_malloc import keep_freed_memory

_SCRIPT = r"""
import json, sys, torch
from DiffIR.utils.cpu_malloc import keep_freed_memory

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

applied = keep_freed_memory() if sys.argv[1] == "keep" else False
n = 24 * 2**20 // 4  # 24 MB: a large activation at the seed settings; glibc maps such blocks by default
before = rss()
t = torch.ones(n)
grown = rss() - before
del t
after_free = rss() - before
sizes = []
for _ in range(30):  # a training loop: the same sizes again and again
    t = torch.ones(n)
    del t
    sizes.append(rss() - before)
print(json.dumps({"applied": applied, "grown": grown, "after_free": after_free, "sizes": sizes}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_freed_activation_sized_tensors_stay_resident_for_reuse():
    if not keep_freed_memory():
        pytest.skip("glibc malloc is not the allocator here")
    default, kept = _run("system"), _run("keep")
    assert kept["applied"]
    assert default["grown"] > 20 and default["after_free"] < 4, "glibc's default already keeps the block"
    assert kept["grown"] > 20 and kept["after_free"] > 20, "the freed block went back to the OS"
    # glibc keeps a few aligned blocks before it reuses them; after that the loop must not grow any further
    assert kept["sizes"][-1] - kept["sizes"][-10] < 1, "freed memory is not being reused"
