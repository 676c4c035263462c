"""Flumph: live video from remote cameras on metered links."""

__version__ = "0.1.0"
