"""lgp-edge: Learngene Pool (Shi et al., AAAI 2024) descendants, profiled and exported for edge devices."""

__version__ = "0.1.0"
