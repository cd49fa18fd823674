"""The robot client: what a robot's computer runs to join a fleet through `lwd gateway`.

    RemoteEpisodeSink   (lwd.client.spool)   the worker's EpisodeSink: durable spool, background upload
    RemotePolicySource  (lwd.client.policy)  the worker's PolicySource: verified, cached weight downloads
    RemotePolicy        (lwd.client.policy)  an Actor served by the gateway's policy server
    GatewayClient       (lwd.client.http)    one method per gateway endpoint

Light on purpose: uploading needs numpy, safetensors and httpx only; torch is imported
when a policy is loaded on the robot. See docs/connecting-a-robot.md.
"""
