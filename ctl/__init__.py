"""ctl: the ops tool, ``flumph ctl``, on the MQTT contract against any broker.

    main.py      the command line: subcommands (devices, start, stop, set, snapshot, cmd, watch,
                 usage, add, forget), checks before connecting, exit codes
    config.py    ``[ctl]`` and ``[ctl.mqtt]``: the configuration models
    session.py   one synchronous MQTT session (paho behind a bounded queue), CtlError
    commands.py  the subcommands that talk to devices over the broker
    describe.py  pure: messages as text (``watch`` lines, the ``devices`` table)
    lifecycle.py ``ctl add`` and ``ctl forget``, and the known-device check
    setwait.py   pure: follows one ``set`` to the backend's answer and the device's applied version
    usage.py     ``ctl usage``: data used vs budget, read from the dashboard's HTTP API

It imports the core only (paho via flumph.mqtt; urllib for the dashboard), never a component or a
web framework, so it runs wherever the agent's dependencies are installed.
"""
