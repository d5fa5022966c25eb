"""docs/network-local.md's walkthrough, run as a user would: the script
that carries it out (scripts/network_local_walkthrough.sh) against the real
binary and the sample models. It checks every step itself and exits
non-zero at the first that does not hold; its own waits are bounded."""

import os
import random
import shutil
import socket
import subprocess

from harness import PERCH_BIN, ROOT, WAKEWORD_MODELS


def free_port_base():
    """A base whose 100 ports above it nothing listens on (the script uses
    base+1..3, base+11..13 and base+80)."""
    for _ in range(50):
        base = random.randrange(20000, 60000, 100)
        taken = False
        for offset in (1, 2, 3, 11, 12, 13, 80):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", base + offset))
                except OSError:
                    taken = True
                    break
        if not taken:
            return base
    raise AssertionError("no free port range for the walkthrough")


def test_the_walkthrough_runs(tmp_path):
    sample = tmp_path / "sample-repo"
    for model in ("melspectrogram", "embedding_model", "hey_jarvis_v0.1", "alexa_v0.1",
                  "silero_vad"):
        (sample / model / "1").mkdir(parents=True)
        shutil.copy(WAKEWORD_MODELS / f"{model}.onnx", sample / model / "1" / "model.onnx")
    # A user's bare environment, but the sanitizer settings of a sanitized
    # build still reach the binary (its suppressions name the runtime's leaks).
    env = {"PATH": "/usr/bin:/bin", "PORT_BASE": str(free_port_base())}
    env.update({name: value for name, value in os.environ.items() if name.endswith("SAN_OPTIONS")})
    done = subprocess.run(
        [ROOT / "scripts" / "network_local_walkthrough.sh", PERCH_BIN, sample], env=env,
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "walkthrough done" in out
    # Every agent was asked for every model and someone answered, over REST
    # and gRPC, and models answered by another agent than the one asked.
    assert out.count("answered by edge-") == 18
    assert out.count("through edge-1: ok") == 4
    asked_edge_1 = [line for line in out.splitlines() if line.startswith("asked edge-1 ")]
    assert any(not line.endswith("answered by edge-1") for line in asked_edge_1), out
