"""service: the glue every server component shares (a library folder, not a program).

    app.py       a FastAPI app around one service (lifespan = start/stop), uvicorn on its loop
    metrics.py   ``GET /metrics``: Prometheus text from each component's MetricsSource
    ports.py     is a TCP/UDP port free for the server that will bind it (checked before start)
    runner.py    one exit-code policy for long-running commands (0 clean, 1 runtime, 2 usage)

It imports the core and web frameworks (FastAPI, uvicorn, prometheus_client), never a component.
The server components (broker, ingest, dashboard) and the composition (up) may import it; the
agent and ctl never do, so they install without the ``[server]`` extra.
"""
