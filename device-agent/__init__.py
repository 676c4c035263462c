"""device-agent component of Flumph."""
