"""The robot client stays light: a robot's computer that sends episodes and asks the gateway
for actions never loads torch."""

import subprocess
import sys


def test_importing_the_robot_client_does_not_load_torch():
    probe = "import sys, lwd.client.policy, lwd.client.spool, lwd.client.http; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_remote_policy_executes_a_chunk_then_asks_again():
    import numpy as np

    from lwd.client.policy import RemotePolicy

    policy = RemotePolicy(client=None, execute_steps=2)
    assert policy.needs_chunk
    policy.fill(np.arange(8, dtype=np.float32).reshape(4, 2), version=7)
    assert policy.version == 7
    assert policy.next_action().tolist() == [0.0, 1.0]
    assert policy.next_action().tolist() == [2.0, 3.0]
    assert policy.needs_chunk  # only execute_steps of the 4 actions run
