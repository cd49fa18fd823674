"""The network gateway: episode upload, policy distribution and remote inference for
robots that are not on the learner's machine (`lwd gateway serve`).

A fleet-runtime-level layer: it uses the store (lwd.data), the registry (lwd.fleet.registry)
and the policy; nothing below it imports it. Importing this package loads no web framework:
`lwd.gateway.server` does, `lwd.gateway.wire` and `lwd.gateway.config` do not.
"""
