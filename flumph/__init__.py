"""Flumph: live video from remote cameras on metered links.

This package is the core: what more than one component speaks, and nothing else. It imports no
component and no web framework (tests/test_layout.py checks).

    control/      the MQTT contract: wire basics, topics, patches (strict), messages (tolerant)
    settings.py   the stream settings a device can be told to have
    mqtt.py       the one MQTT settings model and a configured paho client
    mqttwatch.py  why an MQTT client is not connected, said as it happens
    srt/          libsrt 1.5 through ctypes: library, options and stats, caller, epoll server
    media/        pure media formats: Matroska reader/writer, EBML, fMP4, bitstreams, codec strings
    config.py     configuration loading: TOML < env < flags, nested tables, renamed keys
    auth.py       the password check and signed tokens the dashboard and ingest share
    cli.py        the ``flumph`` program: dispatches each subcommand to its component by module path
    clihelp.py    help texts' defaults read from the models
    logsetup.py   logging for every command: plain lines or JSON
    web/          the viewer page and player shared by the ingest and the dashboard

Components, each a top-level folder mapped to ``flumph.<name>`` in pyproject's package-dir:
broker/, ingest/, dashboard/, device-agent/ (flumph.agent), ctl/, up/, and service/ (the glue the
server components share).
"""

__version__ = "0.1.0"
