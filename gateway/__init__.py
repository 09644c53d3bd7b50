"""sensegate: an edge gateway for city sensing networks."""

__version__ = "0.1.0"
