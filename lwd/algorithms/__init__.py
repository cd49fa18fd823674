"""Algorithms: pure loss and update functions on tensors. No I/O, no processes, no envs."""
