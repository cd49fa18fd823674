"""How a policy's chunks are sampled, as configs name it (no torch: the gateway's CLI imports it)."""

from __future__ import annotations

# The sampling temperature s scales the flow's initial noise, x_0 ~ N(0, s²I): 1 is the
# policy's own distribution, 0 the deterministic flow; above 4 nothing useful is left.
MAX_NOISE_SCALE = 4.0


def check_noise_scale(value: float, name: str = "noise_scale") -> None:
    """Refuse a sampling temperature outside [0, MAX_NOISE_SCALE] (NaN included)."""
    if not 0.0 <= value <= MAX_NOISE_SCALE:
        raise ValueError(f"{name} must be in [0, {MAX_NOISE_SCALE:g}], got {value}")
