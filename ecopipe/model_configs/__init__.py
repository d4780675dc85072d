"""Architecture configs (config.json values of the real checkpoints) for `model.weights=random`."""
