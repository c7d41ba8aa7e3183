"""Wire benchmark: raw pyzmq against synthgrad's codec and transport, two processes over ipc.

    .venv/bin/python benchmarks/wire.py                  # full run, a table (one to two minutes)
    .venv/bin/python benchmarks/wire.py --json           # the same as JSON
    .venv/bin/python benchmarks/wire.py --quick --json   # a few seconds; what CI runs

For each payload size the same two processes measure --repeats back-to-back pairs of:
  raw        64 B and 4 KiB as one frame; 64 KiB and up as [32-byte header, payload] with
             copy=False (the best plain-pyzmq framing for each size, as measured
             on this machine before synthgrad's codec was written);
  synthgrad  Message(ACT, tensors={"x": float32 array of that size}) through send_message /
             recv_message, one Message built per send, decoded into a numpy view per receive.
Throughput is messages sent back to back until the receiver acknowledges the last one.  Round
trip is one 64-byte message there and one back (raw: echo the bytes; synthgrad: answer the
ACT with a GRAD carrying the received tensor).  Both use the same high-water marks
(synthgrad's DEFAULT_HWM) so that ratios isolate the codec and transport.  A row reports the
pair with the median ratio (and the range of all ratios; the JSON has every pair), so a
burst of background load on this shared 2-core machine moves one pair, not the result.
Compare ratios, which are taken in one run, not absolutes.
Neither process imports torch; the JSON says whether either did.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np
import zmq
from synthgrad.protocol import (
    DEFAULT_HWM,
    DEFAULT_INLINE_THRESHOLD,
    IpcNamespace,
    Kind,
    Message,
    bind_pull,
    connect_push,
    new_context,
    recv_message,
    send_message,
)

KiB, MiB = 1024, 1024 * 1024
SIZES = [64, 4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB]
SINGLE_FRAME_MAX = 4 * KiB  # raw sends these sizes as one frame, bigger as multipart zero-copy
# Messages per measurement: about half a second each at this machine's speeds (docs/results.md).
FULL_COUNTS = {64: 100_000, 4 * KiB: 50_000, 64 * KiB: 20_000, 1 * MiB: 2_000, 16 * MiB: 150}
QUICK_COUNTS = {64: 2_000, 4 * KiB: 1_000, 64 * KiB: 200, 1 * MiB: 20, 16 * MiB: 4}
RAW_HEADER = bytes(32)
WAIT_MS = 30_000  # no receive in either process waits longer than this: nothing hangs


def label(size: int) -> str:
    """64 -> '64 B', 4096 -> '4 KiB', 1048576 -> '1 MiB'."""
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size // scale} {unit}"
    return f"{size} B"


class Link:
    """The sockets of one process: a control pair and, per implementation, a data pair."""

    def __init__(self, ns: IpcNamespace, me: str, peer: str):
        self.ctx = new_context()
        self.ctl_in, _ = bind_pull(self.ctx, ns.endpoint(f"{me}-ctl"))
        self.ctl_out = connect_push(self.ctx, ns.endpoint(f"{peer}-ctl"))
        # raw: plain pyzmq sockets with the same options a careful user would set
        self.raw_in = self.ctx.socket(zmq.PULL)
        self.raw_out = self.ctx.socket(zmq.PUSH)
        for sock in (self.raw_in, self.raw_out):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, DEFAULT_HWM)
            sock.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
        self.raw_in.bind(ns.endpoint(f"{me}-raw"))
        self.raw_out.connect(ns.endpoint(f"{peer}-raw"))
        self.sg_in, _ = bind_pull(self.ctx, ns.endpoint(f"{me}-sg"))
        self.sg_out = connect_push(self.ctx, ns.endpoint(f"{peer}-sg"))
        for sock in (self.ctl_in, self.raw_in, self.sg_in):
            sock.setsockopt(zmq.RCVTIMEO, WAIT_MS)

    def tell(self, **cmd: object) -> None:
        self.ctl_out.send_json(cmd)

    def hear(self) -> dict:
        return self.ctl_in.recv_json()  # raises zmq.Again after WAIT_MS

    def close(self) -> None:
        self.ctx.destroy(linger=0)


# ----------------------------------------------------------------------------- peer side


def die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (else: after WAIT_MS)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def serve(ns_path: str) -> None:
    """The second process: sink or echo messages as the first one asks."""
    die_with_parent()
    link = Link(IpcNamespace.attach(ns_path), "peer", "main")
    try:
        link.tell(op="ready")
        while True:
            cmd = link.hear()
            if cmd["op"] == "stop":
                link.tell(op="bye", torch_loaded="torch" in sys.modules)
                return
            link.tell(op="go")
            if cmd["op"] == "sink":
                sink(link, cmd["impl"], cmd["size"], cmd["n"])
            else:
                echo(link, cmd["impl"], cmd["n"])
            link.tell(op="done")
    finally:
        link.close()


def sink(link: Link, impl: str, size: int, n: int) -> None:
    """Receive ``n`` messages as fast as they come."""
    if impl == "raw" and size <= SINGLE_FRAME_MAX:
        recv = link.raw_in.recv
        for _ in range(n):
            recv()
    elif impl == "raw":
        recv_multipart = link.raw_in.recv_multipart
        for _ in range(n):
            recv_multipart(copy=False)
    else:
        sock = link.sg_in
        for _ in range(n):
            if recv_message(sock) is None:
                raise TimeoutError("sink timed out")


def echo(link: Link, impl: str, n: int) -> None:
    """Answer each of ``n`` messages."""
    if impl == "raw":
        recv, send = link.raw_in.recv, link.raw_out.send
        for _ in range(n):
            send(recv())
        return
    sock_in, sock_out = link.sg_in, link.sg_out
    for _ in range(n):
        msg = recv_message(sock_in)
        if msg is None:
            raise TimeoutError("echo timed out")
        reply = Message(
            Kind.GRAD, src="peer", port="out", step=msg.step, tensors={"g": msg.tensors["x"]}
        )
        send_message(sock_out, reply)


# ----------------------------------------------------------------------------- main side


def await_op(link: Link, op: str) -> dict:
    reply = link.hear()
    if reply.get("op") != op:
        raise RuntimeError(f"peer said {reply!r}, expected {op!r}")
    return reply


def throughput(link: Link, impl: str, size: int, n: int, inline: int = DEFAULT_INLINE_THRESHOLD) -> float:
    """Messages per second, from the first send to the peer's acknowledgement of the last."""
    payload = np.zeros(size // 4, dtype=np.float32)
    link.tell(op="sink", impl=impl, size=size, n=n)
    await_op(link, "go")
    t0 = time.perf_counter()
    if impl == "raw" and size <= SINGLE_FRAME_MAX:
        data, send = payload.tobytes(), link.raw_out.send
        for _ in range(n):
            send(data)
    elif impl == "raw":
        send_multipart = link.raw_out.send_multipart
        for _ in range(n):
            send_multipart([RAW_HEADER, payload], copy=False)
    else:
        sock = link.sg_out
        for i in range(n):
            send_message(sock, Message(Kind.ACT, src="main", port="in", step=i,
                                       tensors={"x": payload}), inline_threshold=inline)
    await_op(link, "done")
    return n / (time.perf_counter() - t0)


def round_trip(link: Link, impl: str, n: int) -> list[float]:
    """Round-trip times in microseconds of ``n`` 64-byte messages, one at a time."""
    payload = np.zeros(16, dtype=np.float32)
    link.tell(op="echo", impl=impl, n=n)
    await_op(link, "go")
    times = []
    clock = time.perf_counter_ns
    if impl == "raw":
        data, send, recv = payload.tobytes(), link.raw_out.send, link.raw_in.recv
        for _ in range(n):
            t0 = clock()
            send(data)
            recv()
            times.append((clock() - t0) / 1e3)
    else:
        sock_out, sock_in = link.sg_out, link.sg_in
        for i in range(n):
            t0 = clock()
            send_message(sock_out, Message(Kind.ACT, src="main", port="in", step=i,
                                           tensors={"x": payload}))
            if recv_message(sock_in) is None:
                raise TimeoutError("round trip timed out")
            times.append((clock() - t0) / 1e3)
    await_op(link, "done")
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def count(size: int, quick: bool) -> int:
    """Messages per measurement: the tables for the standard sizes, about 0.5 s otherwise."""
    table = QUICK_COUNTS if quick else FULL_COUNTS
    if size in table:
        return table[size]
    n = int(0.5 * min(500_000, 1.5e9 / size))
    return max(n // 100, 4) if quick else max(n, 20)


def measure(link: Link, quick: bool, repeats: int, sizes: list[int], inline: int) -> dict:
    rows = []
    for size in sizes:
        n = count(size, quick)
        throughput(link, "raw", size, max(n // 10, 1))  # warm up both paths
        throughput(link, "synthgrad", size, max(n // 10, 1), inline)
        pairs = []
        for rep in range(repeats):
            # Back-to-back pairs in alternating order: the ratio of a pair sees the same
            # background load on both sides, and the median pair drops the outliers.
            order = ("raw", "synthgrad") if rep % 2 == 0 else ("synthgrad", "raw")
            pair = {impl: throughput(link, impl, size, n, inline) for impl in order}
            pair["ratio"] = pair["synthgrad"] / pair["raw"]
            pairs.append(pair)
        ratios = [pair["ratio"] for pair in pairs]
        median = sorted(pairs, key=lambda pair: pair["ratio"])[(len(pairs) - 1) // 2]
        row = {"size": size, "label": label(size), "messages": n}
        for impl in ("raw", "synthgrad"):  # the figures of the median pair, so they agree
            row[impl] = {"msgs_per_s": median[impl], "gb_per_s": median[impl] * size / 1e9}
        row["raw"]["frames"] = 1 if size <= SINGLE_FRAME_MAX else 2
        row["synthgrad"]["frames"] = 1 if size < inline else 2
        row["ratio"] = median["ratio"]
        row["ratio_min"], row["ratio_max"] = min(ratios), max(ratios)
        row["pairs"] = pairs
        rows.append(row)
        log(f"{label(size):>7}: ratio {row['ratio']:.2f} (pairs {', '.join(f'{r:.2f}' for r in ratios)})")
    # Round trips in short alternating chunks, so that both see the same background load.
    chunks, chunk = (2, 150) if quick else (5 * repeats, 400)
    round_trip(link, "raw", chunk)  # warm up
    round_trip(link, "synthgrad", chunk)
    samples: dict[str, list[float]] = {"raw": [], "synthgrad": []}
    for i in range(chunks):
        for impl in ("raw", "synthgrad") if i % 2 == 0 else ("synthgrad", "raw"):
            samples[impl].extend(round_trip(link, impl, chunk))
    rtt: dict = {}
    for impl, values in samples.items():
        rtt[impl] = {"p50_us": percentile(values, 50), "p99_us": percentile(values, 99),
                     "samples": len(values)}
    rtt["p50_ratio"] = rtt["synthgrad"]["p50_us"] / rtt["raw"]["p50_us"]
    rtt["p99_ratio"] = rtt["synthgrad"]["p99_us"] / rtt["raw"]["p99_us"]
    log(f"round trip p50 ratio {rtt['p50_ratio']:.2f}")
    return {"throughput": rows, "round_trip_64B": rtt}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(quick: bool, repeats: int, sizes: list[int], inline: int) -> dict:
    """Start the peer, measure, and always stop the peer and remove the ipc directory."""
    ns = IpcNamespace()
    link = None
    peer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--peer", ns.path])
    try:
        link = Link(ns, "main", "peer")
        await_op(link, "ready")
        report = measure(link, quick, repeats, sizes, inline)
        link.tell(op="stop")
        bye = await_op(link, "bye")
        peer.wait(timeout=10)
        report["torch_loaded"] = bye["torch_loaded"] or "torch" in sys.modules
        return report
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait(timeout=10)
        if link is not None:
            link.close()
        ns.cleanup()


def table(report: dict) -> str:
    lines = [
        "| size | frames raw/sg | raw msgs/s | raw GB/s | synthgrad msgs/s | synthgrad GB/s "
        "| synthgrad/raw (min-max) |",
        "|---:|:---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["throughput"]:
        raw, sg = row["raw"], row["synthgrad"]
        lines.append(
            f"| {row['label']} | {raw['frames']}/{sg['frames']} | {raw['msgs_per_s']:,.0f} "
            f"| {raw['gb_per_s']:.3f} | {sg['msgs_per_s']:,.0f} | {sg['gb_per_s']:.3f} "
            f"| {row['ratio']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |"
        )
    rtt = report["round_trip_64B"]
    lines += [
        "",
        "| round trip, 64 B | p50 us | p99 us |",
        "|---|---:|---:|",
        f"| raw pyzmq | {rtt['raw']['p50_us']:.1f} | {rtt['raw']['p99_us']:.1f} |",
        f"| synthgrad | {rtt['synthgrad']['p50_us']:.1f} | {rtt['synthgrad']['p99_us']:.1f} |",
        f"| synthgrad/raw | {rtt['p50_ratio']:.2f} | {rtt['p99_ratio']:.2f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test for CI")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=None,
                        help="measurement pairs per size (default 7, quick 1)")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, metavar="BYTES",
                        help=f"payload sizes, multiples of 4 (default: {SIZES})")
    parser.add_argument("--inline-threshold", type=int, default=DEFAULT_INLINE_THRESHOLD,
                        metavar="BYTES", help="synthgrad sends tensors this big or bigger as "
                        f"frames of their own (default {DEFAULT_INLINE_THRESHOLD})")
    parser.add_argument("--peer", metavar="IPC_DIR", help=argparse.SUPPRESS)  # internal role
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so that run()'s cleanup stops the peer and removes the
    # ipc directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if any(size < 4 or size % 4 for size in args.sizes):
        parser.error("--sizes must be positive multiples of 4 (the payload is float32)")
    if args.peer:
        serve(args.peer)
        return
    repeats = args.repeats or (1 if args.quick else 7)
    report = {
        "command": " ".join(["python", "benchmarks/wire.py", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
        },
        "quick": args.quick,
        "repeats": repeats,
        "hwm": DEFAULT_HWM,
        "inline_threshold": args.inline_threshold,
    }
    report.update(run(args.quick, repeats, args.sizes, args.inline_threshold))
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
