"""Write one flow network of an LWD learner checkpoint as a policy checkpoint, so `lwd eval`
can score it: `prior` (the behaviour prior trained online by flow matching) or `reference`
(its slowly updated copy that QAM regularises towards).

    .venv/bin/python tools/learner_network_as_policy.py RUN/learner/final prior OUT_DIR
    .venv/bin/lwd eval --checkpoint OUT_DIR --split validation ...

The policy's instruction table and manifest are copied; every other tensor comes from the
learner checkpoint's `<network>.` entries, which must match the policy's tensors one to one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

NETWORKS = ("prior", "reference")


def export(learner_final: Path, network: str, out: Path) -> Path:
    if network not in NETWORKS:
        raise SystemExit(f"network must be one of {NETWORKS}, got {network!r}")
    policy_file, learner_file = learner_final / "policy.safetensors", learner_final / "learner.safetensors"
    for file in (policy_file, learner_file):
        if not file.exists():
            raise SystemExit(f"{file}: missing (an LWD learner checkpoint has policy and learner files)")
    with safe_open(str(policy_file), "pt") as policy, safe_open(str(learner_file), "pt") as learner:
        prefix = network + "."
        tensors = {k[len(prefix) :]: learner.get_tensor(k) for k in learner.keys() if k.startswith(prefix)}
        if not tensors:
            raise SystemExit(f"{learner_file} has no {network!r} network (a frozen prior keeps none)")
        tensors["instruction_table"] = policy.get_tensor("instruction_table")
        if set(tensors) != set(policy.keys()):
            raise SystemExit(f"{network} and policy tensors differ: {sorted(set(tensors) ^ set(policy.keys()))}")
        metadata = policy.metadata()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(learner_final / "manifest.json", out / "manifest.json")
    save_file(tensors, str(out / "policy.safetensors"), metadata=metadata)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(export(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
