"""The agent's tracer (agents/runtime/trace.py): what it records, its limit, the clock offset."""

from __future__ import annotations

import json

from synthgrad.agents.runtime.trace import NULL_TRACER, Tracer, clock_offset, flow_key


def test_clock_offset_of_a_peer_ahead_by_a_known_amount():
    # The peer's clock reads ours + 1000 ns; 30 ns each way; the peer takes 500 ns to answer.
    sent = 10_000
    peer_received = sent + 30 + 1000
    peer_sent = peer_received + 500
    received = peer_sent - 1000 + 30
    assert clock_offset(sent, received, peer_received, peer_sent) == (1000, 60)
    # Asymmetric legs: the error is half the difference, within half the round trip.
    offset, trip = clock_offset(sent, sent + 100 + 500 + 10, sent + 100 + 1000, sent + 100 + 1000 + 500)
    assert offset == 1000 + (100 - 10) // 2 and abs(offset - 1000) <= trip / 2


def test_spans_and_flows_are_written_with_the_offset_and_the_limit_counts_the_rest(tmp_path):
    tracer = Tracer(limit=3)
    with tracer.span("forward", 7):
        pass
    tracer.flow(flow_key("l1", "l2", "ACT", "in", 7), out=True)
    tracer.add("send", 100, 250)
    tracer.add("backward", 300, 400, 7)  # over the limit: counted, not kept
    tracer.flow("x", out=False)
    path = tracer.write(tmp_path, "l1", offset_ns=-5, round_trip_ns=40)
    doc = json.loads(path.read_text())
    assert path.name.startswith("l1.") and doc["agent"] == "l1"
    assert doc["clock_offset_ns"] == -5 and doc["round_trip_ns"] == 40 and doc["dropped"] == 2
    (kind, start, end, step), send = doc["spans"]
    assert (kind, step) == ("forward", 7) and end >= start > 0
    assert send == ["send", 100, 250, -1]
    assert [key for key, _, _ in doc["flows"]] == ["l1>l2|ACT|in|7"] and doc["flows"][0][2] is True


def test_tracing_off_records_nothing():
    with NULL_TRACER.span("forward", 1):
        pass
    NULL_TRACER.add("send", 1, 2)
    NULL_TRACER.flow("k", out=True)
    assert NULL_TRACER.enabled is False and not hasattr(NULL_TRACER, "spans")
