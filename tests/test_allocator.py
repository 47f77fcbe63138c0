"""emotion.serving.allocator: a server's repeated large temporaries reuse their pages instead of faulting in
fresh ones. Each case runs in a fresh interpreter: the settings are the whole process's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Eight arrays of 1.6 MB made and dropped together, 20 times (after 3 rounds to settle): the page faults
# counted meanwhile. With glibc's defaults each round's arrays come back as fresh pages.
SCRIPT = """
import resource, sys
import numpy as np
from emotion.serving import allocator
print("tuned" if sys.argv[1] == "tune" and allocator.tune() else "default")
def rounds(n):
    for _ in range(n):
        arrays = [np.ones(200_000) for _ in range(8)]
        del arrays
rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")


def faults(mode: str, **env) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_tuned_the_same_temporaries_reuse_their_pages():
    state, default = faults("leave")
    assert state == "default" and default > 20 * 8 * 300  # each round faulted in most of its 12.8 MB again
    state, tuned = faults("tune")
    assert state == "tuned" and tuned < default / 100


def test_a_malloc_variable_set_by_the_user_is_left_to_decide():
    state, count = faults("tune", MALLOC_ARENA_MAX="2")
    assert state == "default" and count > 20 * 8 * 300
