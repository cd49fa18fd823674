"""lwd: learning while deploying.

A fleet of robots runs one language-conditioned policy, every episode flows into a
durable store, and a learner improves the policy with offline-to-online RL.
Layers (lower never imports higher): envs -> data -> policy -> algorithms -> training
-> fleet -> evaluation -> benchmarks, recipes -> cli.
"""

__version__ = "0.1.0"
