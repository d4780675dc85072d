"""A job's stages, in order: inference (measured) -> impact (footprint) -> ESS (score)."""
