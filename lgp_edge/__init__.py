"""lgp-edge: Learngene Pool (Shi et al., AAAI 2024) descendants, profiled and exported for edge devices."""

import logging

__version__ = "0.1.0"

# A library's records go where the application sends them; with no logging set up, nowhere (not Python's
# last-resort stderr handler). The CLI sets up its own.
logging.getLogger(__name__).addHandler(logging.NullHandler())
