"""EmbeddedBroker inside the caller's event loop, as `flumph up` runs it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flumph.broker.config import BrokerSettings
from flumph.broker.server import BrokerStartError, EmbeddedBroker
from flumph.config import ConfigError
from tests.test_broker_defects import _remaining_length, _utf8


def _publish(topic: str, payload: bytes) -> bytes:
    """QoS 0 retained PUBLISH."""
    body = _utf8(topic.encode()) + payload
    return b"\x31" + _remaining_length(len(body)) + body


def _connect(client_id: str) -> bytes:
    body = _utf8(b"MQTT") + bytes([4, 0x02]) + (30).to_bytes(2, "big") + _utf8(client_id.encode())
    return b"\x10" + _remaining_length(len(body)) + body


def _subscribe(topic_filter: str) -> bytes:
    body = (1).to_bytes(2, "big") + _utf8(topic_filter.encode()) + b"\x00"
    return b"\x82" + _remaining_length(len(body)) + body


async def _session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_connect("t"))
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\x20\x02\x00\x00"
    return reader, writer


async def test_in_process_start_stop_keeps_retained(tmp_path: Path) -> None:
    settings = BrokerSettings(host="127.0.0.1", port=0, state_dir=tmp_path)
    async with EmbeddedBroker(settings) as broker:
        assert broker.running and broker.port != 0
        _, writer = await _session(broker.port)
        writer.write(_publish("flumph/cam1/desired", b'{"v":2}'))
        writer.write(b"\xe0\x00")  # DISCONNECT
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.3)
    assert not broker.running

    async with EmbeddedBroker(settings) as broker:
        reader, writer = await _session(broker.port)
        writer.write(_subscribe("flumph/#"))
        await writer.drain()
        suback = await asyncio.wait_for(reader.readexactly(5), 10)
        assert suback == b"\x90\x03\x00\x01\x00"
        publish = await asyncio.wait_for(reader.readexactly(2), 10)
        assert publish[0] == 0x31  # PUBLISH, retain flag set
        body = await reader.readexactly(publish[1])
        assert body.endswith(b'flumph/cam1/desired{"v":2}')
        writer.close()


async def test_silent_before_connect_is_dropped(tmp_path: Path) -> None:
    settings = BrokerSettings(host="127.0.0.1", port=0, state_dir=tmp_path, connect_timeout_s=0.5)
    async with EmbeddedBroker(settings) as broker:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        # amqtt alone would wait for CONNECT forever; the broker drops the connection.
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_start_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="passwd_file"):
        await EmbeddedBroker(
            BrokerSettings(port=0, passwd_file=tmp_path / "none", state_dir=tmp_path)
        ).start()
    async with EmbeddedBroker(BrokerSettings(host="127.0.0.1", port=0, state_dir=tmp_path)) as b:
        taken = BrokerSettings(host="127.0.0.1", port=b.port, state_dir=tmp_path / "other")
        with pytest.raises(BrokerStartError, match=r"broker on 127\.0\.0\.1"):
            await EmbeddedBroker(taken).start()
