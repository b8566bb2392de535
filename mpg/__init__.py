"""MPG: the Mobile Push Gateway and its push server (PSS)."""

__version__ = "0.1.0"
