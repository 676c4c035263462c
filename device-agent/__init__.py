"""agent (folder device-agent/): ``flumph agent``, camera → encode or pass through → SRT push,
the MQTT device side, the data budget.

    main.py           the command: ``[agent]``/``[agent.mqtt]`` config, wiring, lifetime
    sources.py        frame sources: synthetic camera, OpenCV camera, anything FFmpeg opens
    capture.py        capture at the requested fps into a one-frame mailbox
    encoders.py       encoder choice and low-delay encoding (PyAV)
    codecconfig.py    decoder configuration records for Matroska: av1C, hvcC, avcC
    pipeline.py       capture → encode → live Matroska → SRT, and live setting changes
    encodeloop.py     the encode thread: encode, live Matroska, SRT send (a mixin of Pipeline)
    pipelinestats.py  pure: the pipeline's counters, send rate, latency percentiles
    pipelinebudget.py the pipeline as the data budget drives it: stop, resume, pace (a mixin)
    rateloop.py       the rate loop: the encoder's target from the setting, the uplink, other caps
    ratecontrol.py    pure: closed-loop rate control (bytes out and a clock in, decisions out)
    linkestimate.py   pure: the uplink's capacity from SRT statistics
    ladder.py         pure: the picture ladder below the bits-per-pixel floor
    codedsource.py    a camera's or file's own H.264/H.265/AV1 packets (PyAV)
    copydecision.py   pass through or transcode: the decision and its reason in words
    copyframes.py     pure: demuxed packets → what our live Matroska carries
    copymode.py       the pipeline's copy mode (a mixin of Pipeline)
    passthrough.py    the copy path: coded source → live Matroska → SRT, no decoder or encoder
    watchdog.py       a worker thread that ends while the device should stream is reported
    threadpolicy.py   every thread of the agent on the normal scheduler (SVT-AV1 sets SCHED_FIFO)
    transport.py      SRT push: live-mode caller, reconnect with jittered backoff
    destination.py    where and how to send: ingest URL, SRT options, backoff (pure)
    control.py        the MQTT session: presence, the desired/reported shadow, when to publish
    commands.py       one-shot commands (keyframe, snapshot, restart, grant), carried out and acked
    desired.py        pure: a ``desired`` document over the settings in force, or why not
    telemetry.py      pure: what telemetry says, rates from sampled counters
    snapshot.py       one still for ``cmd/snapshot``, small enough for a metered link
    budget.py         pure: the data budget's arithmetic (periods, state, pacing)
    budgetguard.py    the budget enforced on the send path: gate, refusals, grants
    usage.py          bytes used per period and kind, kept on disk
    mqttmeter.py      the MQTT connection's bytes at IP level, from the kernel's TCP counters

Imports the core only: no component, no service glue, nothing from the ``[server]`` extra, so a
device installs ``flumph[agent]`` alone.
"""
