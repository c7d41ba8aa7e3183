"""An agent written from docs/PROTOCOL.md alone: raw pyzmq, msgpack, struct and numpy, no
synthgrad import.  It plays a layer that passes its input on unchanged (the identity) and
its gradient back unchanged, following section 12.10 step by step.

Usage: python outside_agent.py CONTROL_ENDPOINT NAME
"""

import os
import struct
import sys
import time

import msgpack
import numpy as np
import zmq

PREFIX = struct.Struct("<2sBBBBHqqq")  # section 3: magic, major, minor, kind, flags, H, step, tick, ts
HELLO, WELCOME, START, ACT, GRAD, METRICS, HEARTBEAT, STOP = 1, 2, 3, 4, 7, 9, 10, 12
DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8", "int8": "i1", "int16": "<i2",
          "int32": "<i4", "int64": "<i8", "uint8": "u1", "bool": "?"}


def encode(kind, run, src, port="", step=0, meta=None, tensors=()):
    """Frame 0 with every tensor inline (section 5), 8-byte aligned."""
    descriptors = [[name, "float32", list(a.shape), True] for name, a in tensors]
    header = msgpack.packb({"run": run, "src": src, "port": port, "tensors": descriptors, "meta": meta or {}})
    frame = bytearray(PREFIX.pack(b"SG", 1, 0, kind, 0, len(header), step, 0, time.time_ns()) + header)
    for _, a in tensors:
        frame += b"\0" * (-len(frame) % 8)
        frame += np.ascontiguousarray(a, "<f4").tobytes()
    frame += b"\0" * (-len(frame) % 8) if not tensors else b""
    return [bytes(frame)]


def decode(frames):
    magic, major, _, kind, _, hlen, step, _, _ = PREFIX.unpack_from(frames[0])
    assert magic == b"SG" and major == 1
    header = msgpack.unpackb(frames[0][32:32 + hlen])
    offset, extra, tensors = 32 + hlen + (-(32 + hlen) % 8), 1, {}
    for name, dtype, shape, inline in header["tensors"]:
        dt = np.dtype(DTYPES[dtype])
        size = dt.itemsize * int(np.prod(shape))
        if inline:
            offset += -offset % 8
            data, offset = frames[0][offset:offset + size], offset + size
        else:
            data, extra = frames[extra], extra + 1
        tensors[name] = np.frombuffer(data, dt).reshape(shape)
    return kind, step, header, tensors


def main(control, name):
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.IDENTITY, name.encode())
    dealer.connect(control)
    dealer.send_multipart(encode(HELLO, "", name, meta={"pid": os.getpid()}))
    while True:  # step 3: WELCOME (or STOP)
        kind, _, header, _ = decode(dealer.recv_multipart())
        if kind == STOP:
            return
        if kind == WELCOME:
            break
    run, meta = header["run"], header["meta"]
    spec, endpoints = meta["spec"], meta["endpoints"]
    fwd, bwd = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    for sock, plane, hwm in ((fwd, "fwd", spec["run"]["hwm"]), (bwd, "bwd", 0)):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.bind(endpoints[name][plane])
    dealer.send_multipart(encode(HEARTBEAT, run, name, meta={"state": "ready", "pid": os.getpid()}))
    while decode(dealer.recv_multipart())[0] != START:
        pass
    (link_in,) = spec["in_links"]
    (link_out,) = spec["out_links"]
    pushes = {}

    def push(peer, plane):
        if (peer, plane) not in pushes:
            sock = pushes[(peer, plane)] = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, spec["run"]["hwm"] if plane == "fwd" else 0)
            sock.connect(endpoints[peer][plane])
        return pushes[(peer, plane)]

    steps, next_beat = 0, 0.0
    poller = zmq.Poller()
    for sock in (dealer, fwd, bwd):
        poller.register(sock, zmq.POLLIN)
    while True:
        ready = dict(poller.poll(100))
        if dealer in ready:
            kind, _, _, _ = decode(dealer.recv_multipart())
            if kind == STOP:  # step 6
                dealer.send_multipart(encode(METRICS, run, name, step=steps, meta={"steps": steps, "final_report": True}))
                time.sleep(0.1)
                return
        if fwd in ready:  # the identity: the input goes on as it came
            kind, step, header, tensors = decode(fwd.recv_multipart())
            if "eval" not in header["meta"]:
                steps += 1
            push(link_out["dst"], "fwd").send_multipart(
                encode(ACT, run, name, link_out["dst_port"], step, header["meta"], [("x", tensors["x"])])
            )
        if bwd in ready:  # and so does its gradient, back up the in-link
            kind, step, header, tensors = decode(bwd.recv_multipart())
            if kind == GRAD and link_in["mode"] != "none":
                push(link_in["src"], "bwd").send_multipart(encode(GRAD, run, name, link_in["src_port"], step, {}, [("g", tensors["g"])]))
        if time.monotonic() >= next_beat:
            dealer.send_multipart(encode(HEARTBEAT, run, name, step=steps, meta={"state": "running"}))
            dealer.send_multipart(encode(METRICS, run, name, step=steps, meta={"steps": steps}))
            next_beat = time.monotonic() + 1.0


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
