"""Training loops (SFT now; offline RL next): own optimisers, call the pure losses, log metrics."""
