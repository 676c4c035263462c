"""broker: ``flumph broker``, the embedded MQTT 3.1.1 broker (amqtt 0.12.1 with its defects fixed).

    main.py      the command: options, port checks, ``flumph broker passwd FILE USER``
    config.py    the ``[broker]`` table and its checks
    server.py    the broker as an object another event loop can own (``flumph up``)
    fixes.py     fixes for amqtt 0.12.1's defects (silent clients' wills, retained leaks, ...)
    plugins.py   amqtt plugins: password authentication, the device ACL, the retained store
    acl.py       pure: who may reach which topic (the same rule as deploy/mosquitto/acl)
    passwd.py    the password file: ``username:argon2-hash`` lines
    store.py     retained messages on disk, across restarts
    metrics.py   its Prometheus metrics (clients, messages, subscriptions, retained)

Imports the core and the service glue (flumph.service: ports, metrics), never another component.
"""
