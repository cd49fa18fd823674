"""Training: the SFT and offline-RL loops and the online learners behind one interface
(`online_methods`); they own optimisers, call the pure losses and log metrics."""
