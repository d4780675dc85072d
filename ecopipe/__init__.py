"""ecopipe: measure what ML inference costs the planet, and help cut it."""

__version__ = "0.1.0"
