"""ctl: the ops tool, ``flumph ctl``, on the MQTT contract against any broker.

    main.py      subcommands (devices, start, stop, set, snapshot, cmd, watch, usage) and config
    setwait.py   pure: follows one ``set`` to the backend's answer and the device's applied version
    usage.py     ``ctl usage``: data used vs budget, read from the dashboard's HTTP API

It imports the core only (paho via flumph.mqtt; urllib for the dashboard), never a component or a
web framework, so it runs wherever the agent's dependencies are installed.
"""
