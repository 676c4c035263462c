"""up: composition, ``flumph up``: the broker, the ingest and the dashboard in one process.

    main.py      argument parsing, the shared event loop and FastAPI app, ``--demo``'s agent

The composition root: the one folder allowed to import other components (broker, ingest,
dashboard, through their ``service``/``config`` modules) and the service glue. Nothing imports it.
"""
