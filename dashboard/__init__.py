"""dashboard: ``flumph dashboard``, the fleet service and its web page (no build step).

    main.py           the command: options, port checks, uvicorn
    service.py        the dashboard as one object: config (``[dashboard]``, ``[dashboard.mqtt]``)
    fleet.py          the fleet service: every device's state, fed by one MQTT connection
    fleet_link.py     its MQTT connection: paho's thread to the loop (bounded), readiness
    device_state.py   pure: one device as the fleet knows it (messages, presence, commands)
    fleet_commands.py commands in flight: acks awaited, waiters, timeouts
    fleet_sets.py     patches from ``set`` and the API into the shadow merge, and their answers
    shadow.py         the shadow merge: the one writer of every device's retained ``desired``
    set_answers.py    answers to ``<p>/<dev>/set``: ``set/accepted`` or ``set/rejected``
    ondemand.py       on-demand streaming: a device streams only while somebody watches
    access.py         who may use it: password, session cookie, CSRF and Origin checks
    api.py            the JSON API and its live feed (Server-Sent Events)
    apidocs.py        ``/docs``, ``/redoc``, ``/openapi.json`` behind the same login
    pages.py          the page, its static files (static/), login and logout
    usage_history.py  pure: hourly usage from a device's cumulative byte counters
    usage_store.py    that history on disk (``usage.sqlite3``)
    usage_tracker.py  follows the fleet's messages, keeps bytes per hour per device
    usage_view.py     pure: what the page says about a device's data use
    usage_api.py      data budget and usage routes
    metrics.py        its Prometheus metrics

Imports the core and the service glue (flumph.service), never another component.
"""
