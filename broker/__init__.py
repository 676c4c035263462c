"""broker component of Flumph."""
