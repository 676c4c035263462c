"""ingest: ``flumph ingest``, SRT in (Matroska or MPEG-TS), fMP4 per frame out over WebSocket.

    main.py            the command: options, port checks, uvicorn
    service.py         the ingest as one object: ``[ingest]``, ``[ingest.mqtt]``, start/stop
    srt_ingest.py      SRT publishers: stream-id admission, one demux thread per connection
    demux.py           live demuxing of one publisher's bytes, in a thread of its own
    hub.py             the streams by id, who publishes, viewers joining and leaving
    stream.py          one stream: init segment, cached GOP, fan-out to its viewers, rates
    viewer.py          one viewer: its bounded queue or direct transport, the skip policy
    handoff.py         one bounded, batched hand-off from receive threads to the event loop
    mkv_demux.py       live Matroska demuxed on the SRT receive thread into fMP4 fragments
    ws_direct.py       WebSocket frames built once and written straight to each viewer's transport
    wsframe.py         pure: RFC 6455 server frames
    admission.py       what an anonymous client may hold: waiting viewers, stream ids
    known.py           the devices the ingest knows (retained ``status``)
    keyframes.py       keyframes on demand: asks a device for one for a late joiner or after losses
    app.py             HTTP and WebSocket API: the seed's relay protocol plus SRT streams as fMP4
    relay_protocol.py  pure: the relay protocol's JSON text messages
    demand.py          publishes each device's viewer count (retained ``<p>/<dev>/demand``)
    budget_notice.py   viewers waiting for a device whose data budget is used up are told so
    still.py           the newest picture of a running stream
    latency.py         the histogram of the latency the ingest adds
    metrics.py         its Prometheus metrics

Imports the core and the service glue (flumph.service), never another component.
"""
