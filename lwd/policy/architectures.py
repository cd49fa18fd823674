"""The policy classes a checkpoint can name (`PolicyConfig.architecture`), and one way to build them."""

from __future__ import annotations

from lwd.policy.adapter import FlowPolicyBase
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.token_policy import TokenFlowPolicy

POLICY_CLASSES: dict[str, type[FlowPolicyBase]] = {
    "flow_mlp": FlowChunkPolicy,
    "token_transformer": TokenFlowPolicy,
}


def build_policy(config: PolicyConfig) -> FlowPolicyBase:
    """A freshly initialised policy of the class `config.architecture` names."""
    return POLICY_CLASSES[config.architecture](config)
