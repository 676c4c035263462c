"""A raw MQTT 3.1.1 client on a plain socket, for attacks a library client will not make (or
would hide by reconnecting): any client id, any account, a connection that only listens."""

from __future__ import annotations

import socket
import struct
import time


def _utf8(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def connect_packet(
    client_id: str, user: str | None, password: str | None, keepalive: int = 60
) -> bytes:
    flags = 0x02  # clean session
    payload = _utf8(client_id.encode())
    if user is not None:
        flags |= 0x80
        payload += _utf8(user.encode())
    if password is not None:
        flags |= 0x40
        payload += _utf8(password.encode())
    header = _utf8(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return _packet(0x10, header + payload)


class RawClient:
    def __init__(self, port: int, client_id: str, user: str | None, password: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(connect_packet(client_id, user, password))
        connack = self._read_exactly(4)
        assert connack[:2] == b"\x20\x02", f"not a CONNACK: {connack!r}"
        self.return_code = connack[3]
        self._buf = b""

    def _read_exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def subscribe(self, topic_filter: str, qos: int = 1) -> bytes:
        """SUBACK return codes."""
        body = struct.pack("!H", 1) + _utf8(topic_filter.encode()) + bytes([qos])
        self.sock.sendall(_packet(0x82, body))
        head = self._read_exactly(2)
        assert head[0] == 0x90, f"not a SUBACK: {head!r}"
        return self._read_exactly(head[1])[2:]

    def closed_within(self, seconds: float) -> bool:
        """Whether the broker closes this connection within ``seconds`` (data read is dropped)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(4096):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
