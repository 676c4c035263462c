"""dashboard component of Flumph."""
