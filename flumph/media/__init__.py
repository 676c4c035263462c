"""Pure media-format code: bytes in, bytes out; no sockets, files or threads."""
