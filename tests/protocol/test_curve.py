"""CurveZMQ with a ZAP allow-list on loopback tcp, and the key files' permission checks.

Three clients try each kind of server socket: one with no CURVE at all, one with a valid key
pair that is not on the allow-list, and one that is listed.  Only the listed one gets a
message through, and the server learns its key from the message (`User-Id`).  Every receive
has a timeout, every socket linger 0, and each context (with its ZAP thread) is torn down
after the test.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import zmq
from synthgrad.protocol import (
    CurveKeys,
    Kind,
    Message,
    bind_pull,
    bind_router,
    connect_dealer,
    connect_push,
    new_context,
    recv_message,
    send_message,
    tcp_endpoint,
)
from synthgrad.protocol.curve import (
    AllowList,
    KeyFileError,
    check_private,
    load_public,
    load_secret,
    start_authenticator,
)
from synthgrad.protocol.transport import recv_message_with_user, recv_routed_with_user
from zmq.auth.certs import create_certificates

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE"),
]
WAIT_MS = 5000  # only reached when something is broken
NOTHING_MS = 500  # how long "nothing arrives" is watched for, after the listed message came


@pytest.fixture
def secured():
    """A context whose CURVE servers admit only the keys on its allow-list (empty at first)."""
    ctx = new_context()
    allow = AllowList()
    auth = start_authenticator(ctx, allow)
    yield ctx, allow
    auth.stop()
    ctx.destroy(linger=0)


@pytest.fixture
def client_ctx():
    ctx = new_context()
    yield ctx
    ctx.destroy(linger=0)


def act(src: str, step: int) -> Message:
    return Message(Kind.ACT, src=src, port="in", step=step, tensors={"x": np.full(4, step, dtype=np.float32)})


def three_clients(server: CurveKeys, allow: AllowList) -> tuple[None, CurveKeys, CurveKeys]:
    """(no CURVE, a valid but unlisted pair, a listed pair), the last put on `allow`."""
    unlisted = CurveKeys.generate(server_public=server.public)
    listed = CurveKeys.generate(server_public=server.public)
    allow.update({"listed": listed.public})
    return None, unlisted, listed


def test_only_a_listed_client_registers_on_the_control_router(secured, client_ctx) -> None:
    server_ctx, allow = secured
    server = CurveKeys.generate()
    router, endpoint = bind_router(server_ctx, tcp_endpoint(), curve=server)
    assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":*")
    clients = three_clients(server, allow)
    dealers = [connect_dealer(client_ctx, endpoint, identity=name, curve=keys)
               for name, keys in zip(("plain", "unlisted", "listed"), clients, strict=True)]
    for dealer, name in zip(dealers, ("plain", "unlisted", "listed"), strict=True):
        send_message(dealer, Message(Kind.HELLO, src=name, meta={"pid": 1}))
    identity, user, msg = recv_routed_with_user(router, WAIT_MS)
    assert (identity, msg.kind, msg.src) == (b"listed", Kind.HELLO, "listed")
    assert user == clients[2].public.decode()  # the key the ZAP handler accepted
    assert recv_routed_with_user(router, NOTHING_MS) is None  # the other two never got in
    assert allow.denied >= 1  # the unlisted key was asked about and refused


def test_only_a_listed_client_injects_into_a_data_socket(secured, client_ctx) -> None:
    server_ctx, allow = secured
    server = CurveKeys.generate()
    pull, endpoint = bind_pull(server_ctx, tcp_endpoint(), curve=server)
    clients = three_clients(server, allow)
    pushes = [connect_push(client_ctx, endpoint, curve=keys) for keys in clients]
    for i, push in enumerate(pushes):
        for step in range(3):
            send_message(push, act(("plain", "unlisted", "listed")[i], 10 * i + step), zmq.NOBLOCK)
    got = [recv_message_with_user(pull, WAIT_MS) for _ in range(3)]
    assert [(m.src, m.step) for _, m in got] == [("listed", 20), ("listed", 21), ("listed", 22)]
    assert {user for user, _ in got} == {clients[2].public.decode()}
    assert recv_message(pull, timeout_ms=NOTHING_MS) is None


def test_the_allow_list_can_be_narrowed_and_widened(secured, client_ctx) -> None:
    server_ctx, allow = secured
    server = CurveKeys.generate()
    pull, endpoint = bind_pull(server_ctx, tcp_endpoint(), curve=server)
    late = CurveKeys.generate(server_public=server.public)
    assert allow.name_of(late.public) is None
    allow.update({"late": late.public})  # as an agent does once WELCOME names its peers
    assert allow.name_of(late.public.decode()) == "late"
    push = connect_push(client_ctx, endpoint, curve=late)
    send_message(push, act("late", 1))
    assert recv_message(pull, timeout_ms=WAIT_MS).src == "late"


def test_user_id_is_empty_without_a_zap_handler(client_ctx) -> None:
    pull, endpoint = bind_pull(client_ctx, tcp_endpoint())
    push = connect_push(client_ctx, endpoint)
    send_message(push, act("a", 5))
    user, msg = recv_message_with_user(pull, WAIT_MS)
    assert (user, msg.step) == ("", 5)


# ----------------------------------------------------------------------------- key files


@pytest.fixture
def key_dir(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o700)
    public, secret = (type(tmp_path)(p) for p in create_certificates(folder, "a"))
    os.chmod(secret, 0o600)
    return folder, public, secret


def test_private_key_files_load(key_dir) -> None:
    _, public, secret = key_dir
    pub, sec = load_secret(secret)
    assert len(pub) == len(sec) == 40 and load_public(public) == pub
    assert zmq.curve_public(sec) == pub  # the pair belongs together


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_a_secret_readable_or_writable_by_others_is_refused_with_the_fix(key_dir, mode) -> None:
    _, _, secret = key_dir
    os.chmod(secret, mode)
    with pytest.raises(KeyFileError) as err:
        load_secret(secret)
    assert str(secret) in str(err.value) and f"chmod 600 {secret}" in str(err.value)


def test_a_secret_in_a_directory_others_may_write_is_refused(key_dir) -> None:
    folder, _, secret = key_dir
    os.chmod(folder, 0o770)
    with pytest.raises(KeyFileError, match=f"chmod 700 {folder}"):
        check_private(secret)


def test_missing_malformed_and_public_only_key_files_are_clear_errors(key_dir) -> None:
    folder, public, _ = key_dir
    with pytest.raises(KeyFileError, match="no such key file.*synthgrad keys generate"):
        load_secret(folder / "nobody.key_secret")
    os.chmod(public, 0o600)
    with pytest.raises(KeyFileError, match="holds no secret key"):
        load_secret(public)
    bad = folder / "bad.key_secret"
    bad.write_text("curve\n    public-key = \"short\"\n")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="not 40 Z85 characters"):
        load_secret(bad)
    assert stat.S_IMODE(bad.stat().st_mode) == 0o600
