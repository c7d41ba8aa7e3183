"""Endpoints, sockets and the send/receive helpers, live over ipc and loopback tcp.

Every test has a hard timeout and every receive a timeout; sockets have linger 0 and the
context is destroyed after each test, so a failing test fails and never hangs.
"""

import os
import random
import shutil
import tempfile
import threading

import numpy as np
import pytest
import zmq
from synthgrad.protocol import (
    MAX_IPC_PATH_BYTES,
    CurveKeys,
    IpcNamespace,
    Kind,
    Limits,
    Message,
    ProtocolError,
    bind_pull,
    bind_router,
    connect_dealer,
    connect_push,
    decode,
    encode,
    new_context,
    recv_message,
    recv_routed,
    send_message,
    send_routed,
    tcp_endpoint,
)

pytestmark = pytest.mark.timeout(30)
WAIT = 5000  # ms: generous, only reached when something is broken


@pytest.fixture
def ctx():
    context = new_context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def ns():
    namespace = IpcNamespace()  # under /tmp: pytest's tmp_path may be too long for ipc
    yield namespace
    namespace.cleanup()


@pytest.fixture
def short_tmp():
    path = tempfile.mkdtemp(dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def act(step: int, size: int = 4) -> Message:
    return Message(Kind.ACT, src="a", port="in", step=step,
                   tensors={"x": np.full(size, step, dtype=np.float32)})


# ----------------------------------------------------------------------------- endpoints


def test_ipc_namespace_is_a_short_private_directory(ns: IpcNamespace) -> None:
    assert os.path.isdir(ns.path) and ns.path.startswith("/tmp/sg-")
    assert os.stat(ns.path).st_mode & 0o777 == 0o700
    assert ns.endpoint("layer1") == f"ipc://{ns.path}/layer1"


def test_ipc_namespace_cleanup_removes_directory_and_sockets(ctx: zmq.Context) -> None:
    with IpcNamespace() as ns:
        sock, _ = bind_pull(ctx, ns.endpoint("in"))
        assert os.listdir(ns.path) == ["in"]
        sock.close()
    assert not os.path.exists(ns.path)


def test_attached_namespace_gives_same_endpoints_and_never_deletes(ns: IpcNamespace) -> None:
    other = IpcNamespace.attach(ns.path)
    assert other.endpoint("x") == ns.endpoint("x")
    other.cleanup()
    assert os.path.isdir(ns.path)


def test_too_long_ipc_path_falls_back_to_a_short_hash(short_tmp: str, ctx: zmq.Context) -> None:
    base = os.path.join(short_tmp, "d" * 40)
    os.mkdir(base)
    with IpcNamespace(base) as ns:
        name = "n" * (MAX_IPC_PATH_BYTES - len(ns.path))  # one byte over with the slash
        endpoint = ns.endpoint(name)
        assert len(endpoint) - len("ipc://") <= MAX_IPC_PATH_BYTES
        assert endpoint == ns.endpoint(name)  # deterministic: both sides derive it
        assert endpoint != ns.endpoint(name + "2")
        pull, _ = bind_pull(ctx, endpoint)
        push = connect_push(ctx, endpoint)
        send_message(push, act(1))
        assert recv_message(pull, WAIT).step == 1


def test_too_long_ipc_path_without_fallback_is_a_clear_error(short_tmp: str) -> None:
    with IpcNamespace(short_tmp, fallback=False) as ns:
        with pytest.raises(ValueError, match=r"over the limit of 10\d for Unix sockets; use a shorter"):
            ns.endpoint("n" * 120)


@pytest.mark.parametrize("name", ["", "a/b", "..", "."])
def test_ipc_socket_names_must_be_plain_file_names(ns: IpcNamespace, name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        ns.endpoint(name)


def test_tcp_endpoint_defaults_to_loopback() -> None:
    assert tcp_endpoint() == "tcp://127.0.0.1:*"
    assert tcp_endpoint(port=5555) == "tcp://127.0.0.1:5555"
    assert tcp_endpoint("::1", 7) == "tcp://[::1]:7"
    with pytest.raises(ValueError):
        tcp_endpoint(port=70000)


# ----------------------------------------------------------------------------- sockets


def test_tcp_port_zero_resolves_and_carries_messages(ctx: zmq.Context) -> None:
    pull, endpoint = bind_pull(ctx, tcp_endpoint())
    assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":*")
    push = connect_push(ctx, endpoint)
    send_message(push, act(5, size=100_000))  # a separate zero-copy frame
    msg = recv_message(pull, WAIT)
    assert msg.step == 5 and msg.tensors["x"].shape == (100_000,)
    assert (msg.tensors["x"] == 5).all()


def test_big_inline_tensors_are_received_without_copying_frame_zero(ctx: zmq.Context, ns: IpcNamespace) -> None:
    pull, endpoint = bind_pull(ctx, ns.endpoint("p"))
    push = connect_push(ctx, endpoint)
    tensors = {"big": np.arange(50_000, dtype=np.float64), "small": np.arange(3, dtype=np.int8)}
    send_message(push, Message(Kind.ACT, src="a", port="in", tensors=tensors), inline_threshold=1 << 30)
    msg = recv_message(pull, WAIT)
    for name, arr in tensors.items():
        got = msg.tensors[name]
        assert got.tolist() == arr.tolist()
        assert got.flags.aligned and not got.flags.writeable
    assert isinstance(msg.tensors["big"].base, memoryview)  # a view of the zmq frame, not bytes


def test_sockets_have_linger_zero_hwm_and_size_limit(ctx: zmq.Context, ns: IpcNamespace) -> None:
    limits = Limits(max_message_bytes=12345)
    pull, endpoint = bind_pull(ctx, ns.endpoint("p"), hwm=7, limits=limits)
    push = connect_push(ctx, endpoint, hwm=9)
    router, r_end = bind_router(ctx, ns.endpoint("r"), limits=limits)
    dealer = connect_dealer(ctx, r_end, "agent", limits=limits)
    for sock in (pull, push, router, dealer):
        assert sock.getsockopt(zmq.LINGER) == 0
    assert pull.getsockopt(zmq.RCVHWM) == 7 and push.getsockopt(zmq.SNDHWM) == 9
    for sock in (pull, router, dealer):
        assert sock.getsockopt(zmq.MAXMSGSIZE) == 12345


def test_receive_times_out_with_none(ctx: zmq.Context, ns: IpcNamespace) -> None:
    pull, _ = bind_pull(ctx, ns.endpoint("p"))
    assert recv_message(pull, timeout_ms=0) is None
    assert recv_message(pull, timeout_ms=50) is None
    pull.setsockopt(zmq.RCVTIMEO, 50)
    assert recv_message(pull) is None  # blocking receive bounded by the socket's RCVTIMEO


def test_noblock_send_raises_again_and_sends_nothing_partial(ctx: zmq.Context, ns: IpcNamespace) -> None:
    pull, endpoint = bind_pull(ctx, ns.endpoint("p"), hwm=1)
    push = connect_push(ctx, endpoint, hwm=1)
    big = np.ones(1 << 20, dtype=np.uint8)  # multipart: frame 0 + a 1 MiB frame
    sent = 0
    with pytest.raises(zmq.Again):
        for step in range(1000):  # kernel buffers fill after a few MiB
            send_message(push, Message(Kind.ACT, src="a", port="in", step=step,
                                       tensors={"x": big}), zmq.NOBLOCK)
            sent += 1
    received = []
    while (msg := recv_message(pull, timeout_ms=500)) is not None:
        received.append(msg.step)
    assert received == list(range(sent))  # every accepted message whole, nothing else


def test_oversized_frames_are_refused_by_libzmq(ctx: zmq.Context, ns: IpcNamespace) -> None:
    pull, endpoint = bind_pull(ctx, ns.endpoint("p"), limits=Limits(max_message_bytes=4096))
    monster = ctx.socket(zmq.PUSH)
    monster.connect(endpoint)
    monster.send(b"SG" + bytes(10_000))
    assert recv_message(pull, timeout_ms=300) is None  # dropped before allocation
    push = connect_push(ctx, endpoint)
    send_message(push, act(1))
    assert recv_message(pull, WAIT).step == 1


def test_router_and_dealer_exchange_messages_by_identity(ctx: zmq.Context, ns: IpcNamespace) -> None:
    router, endpoint = bind_router(ctx, ns.endpoint("ctl"))
    dealer = connect_dealer(ctx, endpoint, "layer1")
    send_message(dealer, Message(Kind.HELLO, src="layer1", meta={"ports": ["in", "out"]}))
    identity, hello = recv_routed(router, WAIT)
    assert identity == b"layer1" and hello.kind is Kind.HELLO and hello.meta["ports"] == ["in", "out"]
    send_routed(router, identity, Message(Kind.WELCOME, src="orchestrator", run="r1"))
    assert recv_message(dealer, WAIT).kind is Kind.WELCOME
    big = Message(Kind.CHECKPOINT, src="orchestrator", tensors={"w": np.ones(70_000, np.float32)})
    send_routed(router, identity, big)
    assert recv_message(dealer, WAIT).tensors["w"].shape == (70_000,)
    with pytest.raises(zmq.ZMQError):  # ROUTER_MANDATORY: an unknown peer is an error
        send_routed(router, b"nobody", Message(Kind.STOP))


def test_router_names_the_peer_that_sent_garbage(ctx: zmq.Context, ns: IpcNamespace) -> None:
    router, endpoint = bind_router(ctx, ns.endpoint("ctl"))
    dealer = connect_dealer(ctx, endpoint, "rogue")
    dealer.send_multipart([b"not", b"a message"])
    with pytest.raises(ProtocolError, match="from b'rogue'"):
        recv_routed(router, WAIT)
    send_message(dealer, Message(Kind.HEARTBEAT, src="rogue"))
    assert recv_routed(router, WAIT)[1].kind is Kind.HEARTBEAT


def test_dealer_identity_must_be_valid(ctx: zmq.Context, ns: IpcNamespace) -> None:
    for bad in ("", "\0x", "n" * 256):
        with pytest.raises(ValueError, match="identity"):
            connect_dealer(ctx, ns.endpoint("ctl"), bad)


def test_curve_keys_encrypt_tcp_and_keep_plain_peers_out(ctx: zmq.Context) -> None:
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    server = CurveKeys.generate()
    pull, endpoint = bind_pull(ctx, tcp_endpoint(), curve=server)
    plain = connect_push(ctx, endpoint)
    send_message(plain, act(1))
    assert recv_message(pull, timeout_ms=300) is None  # no handshake, no delivery
    client = connect_push(ctx, endpoint, curve=CurveKeys.generate(server_public=server.public))
    send_message(client, act(2))
    assert recv_message(pull, WAIT).step == 2
    with pytest.raises(ValueError, match="server_public"):
        connect_push(ctx, endpoint, curve=CurveKeys.generate())


# ----------------------------------------------------------------------------- resilience


def garbage(rng: random.Random) -> list[bytes]:
    """A random multipart message: random bytes, or a valid message damaged."""
    if rng.random() < 0.5:
        return [rng.randbytes(rng.randrange(100)) for _ in range(rng.randint(1, 5))]
    frames = [bytes(memoryview(f).cast("B")) for f in encode(act(0, rng.choice([4, 20_000])))]
    i = rng.randrange(len(frames))
    frames[i] = frames[i][: rng.randrange(len(frames[i]))]
    return frames + [b"extra"] * rng.randrange(2)


def test_bad_multipart_message_is_consumed_whole(ctx: zmq.Context, ns: IpcNamespace) -> None:
    pull, endpoint = bind_pull(ctx, ns.endpoint("p"))
    push = connect_push(ctx, endpoint)
    push.send_multipart([encode(act(1))[0], b"unexpected", b"frames"])
    push.send_multipart([b"x"] * 200)  # more frames than any message may have
    send_message(push, act(2))
    for _ in range(2):
        with pytest.raises(ProtocolError):
            recv_message(pull, WAIT)
    assert recv_message(pull, WAIT).step == 2


def test_live_receive_loop_keeps_serving_after_a_burst_of_garbage(ctx: zmq.Context, ns: IpcNamespace) -> None:
    pull, endpoint = bind_pull(ctx, ns.endpoint("p"), hwm=10_000)
    received: list[int] = []
    errors: list[str] = []

    def serve() -> None:  # an agent's loop: count bad messages, drop them, carry on
        while True:
            try:
                msg = recv_message(pull, timeout_ms=WAIT)
            except ProtocolError as exc:
                errors.append(str(exc))
                continue
            if msg is None or msg.kind is Kind.STOP:
                return
            received.append(msg.step)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    push = connect_push(ctx, endpoint, hwm=10_000)
    rng = random.Random(7)
    expected_errors = 0
    for step in range(50):
        send_message(push, act(step))
    for _ in range(1000):
        frames = garbage(rng)
        try:
            decode(frames)
        except ProtocolError:
            expected_errors += 1
        push.send_multipart(frames)
    for step in range(50, 100):
        send_message(push, act(step, size=rng.choice([1, 30_000])))
    send_message(push, Message(Kind.STOP, src="test"))
    server.join(timeout=20)
    assert not server.is_alive()
    assert len(errors) == expected_errors > 900
    assert received[:50] == list(range(50))
    assert received[-50:] == list(range(50, 100))
