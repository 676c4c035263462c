"""ingest component of Flumph."""
