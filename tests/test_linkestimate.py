"""The link estimator against a sender that never drops (the agent's, since srt_tsbpd = false
became the ingest's default): its send buffer is the whole queue, the RTT stands still while no
ACK advances, and a queue past MAX_QUEUE_MS is discarded with the connection. Pure: numbers and a
clock in, verdicts out (the real link is tests/test_link_adaptation.py's)."""

from __future__ import annotations

from dataclasses import replace

from flumph.agent.linkestimate import (
    DRAINED_BYTES,
    HOLD_S,
    MAX_PAUSE_S,
    MAX_QUEUE_MS,
    RESET_MIN_INTERVAL_S,
    LinkEstimator,
    LinkSample,
    LinkVerdict,
)

POLL_S = 0.25


class NoDropLink:
    """A sender's view of a link through which ``sending`` kbit/s meet ``capacity`` kbit/s, the
    sender dropping nothing: the queue grows for as long as the rate is over the capacity. While
    ``stalled`` (a lost packet waits for its retransmission) no ACK advances: the span grows with
    the clock and the RTT stands still."""

    def __init__(self, capacity: float, base_rtt_ms: float = 40) -> None:
        self.capacity = capacity
        self.base = base_rtt_ms
        self.queue_s = 0.0
        self.t = 0.0
        self.sent = 0
        self.stalled = False
        self.rtt_ms = base_rtt_ms
        self.stall_ms = 0.0

    def poll(self, sending: float) -> LinkSample:
        self.t += POLL_S
        self.sent += int(sending * 125 * POLL_S)
        if sending > 0:
            self.queue_s = max(0.0, self.queue_s + POLL_S * (1 - self.capacity / sending))
        else:
            self.queue_s = max(0.0, self.queue_s - POLL_S)
        if self.stalled:
            self.stall_ms += POLL_S * 1000
        else:
            self.stall_ms = 0.0
            self.rtt_ms = self.base + self.queue_s * 1000
        span = self.base + self.queue_s * 1000 + self.stall_ms
        queued = int(span / 1000 * sending * 125)
        return LinkSample(
            at=self.t, rtt_ms=self.rtt_ms, send_buffer_ms=span, send_buffer_bytes=queued,
            bytes_sent=self.sent, packets_sent=self.sent // 1316, packets_lost=0,
            packets_dropped=0, send_buffer_now_bytes=queued,
        )  # fmt: skip


def run(est: LinkEstimator, link: NoDropLink, rate: float, seconds: float) -> list[LinkVerdict]:
    verdicts = []
    for _ in range(round(seconds / POLL_S)):
        verdict = est.update(link.poll(rate), rate)
        verdicts.append(verdict)
    return verdicts


def narrowed_to(capacity: float) -> tuple[LinkEstimator, NoDropLink]:
    """300 kbit/s for 5 s on a 600 kbit/s link, which then carries ``capacity``."""
    est = LinkEstimator(300)
    link = NoDropLink(capacity=600)
    run(est, link, 300, 5)
    link.capacity = capacity
    return est, link


def cut_once() -> tuple[LinkEstimator, NoDropLink, int]:
    """300 kbit/s on a 600 kbit/s link that drops to 120: the estimator's first cut."""
    est, link = narrowed_to(120)
    rate = 300.0
    while est.ceiling_kbps is None:
        rate = float(est.update(link.poll(rate), rate).ceiling_kbps or 300)
    return est, link, est.ceiling_kbps


def test_a_queue_that_only_grows_is_cut_until_it_drains() -> None:
    est, link = narrowed_to(120)
    rate = 300.0
    lowest = 300.0
    for _ in range(round(20 / POLL_S)):
        verdict = est.update(link.poll(rate), rate)
        rate = 0.0 if verdict.pause else float(verdict.ceiling_kbps or 300)
        lowest = min(lowest, verdict.ceiling_kbps or 300)
        assert not verdict.reset, "the cuts keep the queue under MAX_QUEUE_MS"
    assert lowest <= 120, "under the capacity"
    assert lowest >= 0.4 * 120, "without spiralling to the floor"
    assert link.queue_s < 0.1, "the queue drained"


def test_a_span_that_grows_while_no_ack_advances_is_a_stall_not_a_second_cut() -> None:
    # After a first cut to under the capacity, a lost packet holds every ACK for 2 s: the span
    # grows 1 ms per ms and the RTT stands still. Sending less would not bring the retransmission
    # sooner.
    est, link, first_cut = cut_once()
    run(est, link, 100, 1.5)  # the encoder came down under the capacity; the queue drains
    assert est.ceiling_kbps == first_cut and est.in_episode
    link.stalled = True
    verdicts = run(est, link, 100, 2)
    assert est.ceiling_kbps == first_cut, [v.reason for v in verdicts]


def test_a_span_that_keeps_growing_while_acks_advance_cuts_again() -> None:
    # The first cut left the rate over the capacity (150 into 120): the queue grows ~0.2 s a
    # second, and ACKs still advance (the RTT moves).
    est, link, first_cut = cut_once()
    assert first_cut > 120
    for _ in range(round(6 / POLL_S)):
        est.update(link.poll(first_cut), first_cut)
    assert est.ceiling_kbps is not None and est.ceiling_kbps < first_cut
    assert "still after a cut" in est.reason


def test_a_queue_past_the_bound_resets_the_connection_and_not_on_every_poll() -> None:
    est, link = narrowed_to(30)  # far under anything the cuts reach in time
    verdicts = run(est, link, 300, 4)
    resets = [v for v in verdicts if v.reset]
    assert len(resets) == 1 and "connection reset" in resets[0].reason
    assert link.base + link.queue_s * 1000 > MAX_QUEUE_MS
    # Not again within RESET_MIN_INTERVAL_S, whatever the old connection's polls still say...
    since = verdicts[verdicts.index(resets[0]) + 1 :]
    since += run(est, link, 300, RESET_MIN_INTERVAL_S - (len(since) + 1) * POLL_S)
    assert not any(v.reset for v in since)
    # ...and again after it, if the queue is still (or again) that long.
    assert any(v.reset for v in run(est, link, 300, 2 * POLL_S))


def test_a_drained_send_buffer_ends_the_episode_before_the_average_does() -> None:
    est, link = narrowed_to(120)
    run(est, link, 300, 1.5)
    assert est.in_episode
    # The link is back; libsrt's average still reads a 1.5 s queue, the buffer holds one packet.
    ended_after = None
    for i in range(round(4 / POLL_S)):
        sample = replace(
            link.poll(50), send_buffer_ms=1500.0, send_buffer_now_bytes=DRAINED_BYTES // 2
        )
        est.update(sample, 50)
        if not est.in_episode:
            ended_after = (i + 1) * POLL_S
            break
    assert ended_after is not None and ended_after <= HOLD_S + 2 * POLL_S


def test_one_episode_cuts_to_a_quarter_at_most_and_a_new_connection_may_go_further() -> None:
    # A span that keeps growing (a lost packet's wait, retransmissions) under any rate.
    est, link = narrowed_to(5)
    rate = 300.0
    for _ in range(round(15 / POLL_S)):
        sample = replace(link.poll(rate), send_buffer_ms=min(2900.0, 40 + 150 * link.t))
        rate = float(est.update(sample, rate).ceiling_kbps or 300)
    assert est.ceiling_kbps is not None and est.ceiling_kbps >= 0.25 * 300
    floor = est.ceiling_kbps
    est.reset()  # the queue was discarded with the connection: the episode may cut again
    link, link.t = NoDropLink(capacity=5), link.t  # the same clock, new counters
    for _ in range(round(10 / POLL_S)):
        est.update(link.poll(rate), rate)
        rate = float(est.ceiling_kbps or 300)
    assert est.ceiling_kbps is not None and est.ceiling_kbps < floor


def test_a_loss_played_out_without_allows_one_more_pause_while_the_queue_is_long() -> None:
    """A late loss costs a receiver with TSBPD every frame until the next keyframe: the frames
    sent meanwhile would only queue in front of it, so the episode may pause again."""
    est, link, _ = cut_once()
    link.capacity = 40  # the queue stays long: the episode's pauses are all spent
    pausing = False
    for _ in range(round(8 / POLL_S)):
        pausing = est.update(link.poll(0 if pausing else 120), 120).pause
    verdicts = run(est, link, 120, 2)
    assert est.queueing_ms > 300 and not any(v.pause for v in verdicts)
    est.pause_for_loss()
    paused = 0
    for _ in range(round(4 / POLL_S)):
        if est.update(link.poll(0 if paused else 120), 120).pause:
            paused += 1
            est.pause_for_loss()  # losses reported during the pause do not make it longer
    assert 0 < paused * POLL_S <= MAX_PAUSE_S
