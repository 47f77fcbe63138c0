"""OpenVINO is imported with its telemetry declined: nothing written under the home folder, no process
started to send a usage event."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import multiprocessing, os, sys
from emotion.onnx_runtime import _openvino
_openvino()
import openvino_telemetry
assert not openvino_telemetry.Telemetry().consent
print(sorted(os.listdir(os.environ["HOME"])), len(multiprocessing.active_children()))
"""


def test_openvino_is_imported_without_its_telemetry(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("CI", None)  # OpenVINO declines by itself under CI: the test must not depend on it
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "0"]
