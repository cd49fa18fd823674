"""The fleet control the gateway serves to robots (`GET /v1/fleet/control`).

The learner's side (`GatewayFleet.hold`) writes `<gateway dir>/fleet_control.json`
atomically; the gateway reads it per request; robots poll it at episode boundaries. A file,
not an admin endpoint: the learner and the gateway share the gateway directory anyway
(tokens, weight bundles), and a file survives a gateway restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FLEET_CONTROL = "fleet_control.json"  # in the gateway dir; written atomically by the fleet's owner


def read_fleet_control(directory: str) -> dict:
    try:
        control = json.loads((Path(directory) / FLEET_CONTROL).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"hold": False}
    return {"hold": bool(control.get("hold", False))}


def write_fleet_control(directory: str, *, hold: bool) -> None:
    """Set the fleet control the gateway serves (the learner's side: `GatewayFleet.hold`)."""
    path = Path(directory) / FLEET_CONTROL
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"hold": hold}))
    os.replace(tmp, path)
