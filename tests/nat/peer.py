#!/usr/bin/env python3
"""One aiortc peer of tests/nat_namespaces.rs, run inside a client network namespace.

The test starts two of these, the offerer in one client namespace and the answerer in the other,
each behind its own NAT namespace. They signal through files in a directory both can see (a
network namespace does not change the file system): the offerer writes ``offer.sdp``, the
answerer writes ``answer.sdp``. aiortc gathers every candidate before ``setLocalDescription``
returns, so one offer and one answer carry them all (no trickle ICE).

    python3 tests/nat/peer.py --role offer|answer --signal-dir DIR --ice-url URL [--ice-url URL] \
        [--user U --password P] [--policy all|relay] [--expect connect|fail] \
        [--require-srflx] [--count N] [--timeout S] [--stun-retries N]

Lines printed for the test to check (stdout), one each:
- ``CANDIDATES host=H srflx=S relay=R`` — what this peer gathered (its own SDP);
- ``SELECTED local=TYPE remote=TYPE protocol=udp`` — the nominated ICE pair (``connect`` only);
- ``OK: ...`` — the outcome matched ``--expect``.
Any failed check prints ``FAIL: why`` on stderr and exits 1.

``--expect connect``: the data channel opens; the offerer sends COUNT messages, the answerer
checks each one arrives intact and in order and echoes it; the offerer checks the echoes; then
the offerer sends a final ``done`` so the answerer knows it may close.
``--expect fail``: ICE must reach ``failed`` (every check timed out) within TIMEOUT seconds.

``--stun-retries``: aioice retransmits a STUN transaction 6 times (0.5 s doubling, about a
minute before a check fails). The test lowers that so the failing case ends in seconds; the
same value applies to every case, so the cone-NAT control runs under identical settings.
"""

import argparse
import asyncio
import hashlib
import logging
import os
import sys
import time


class CheckFailed(Exception):
    """A check failed; main() prints the message and exits 1."""


def fail(msg: str) -> None:
    raise CheckFailed(msg)


def die(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


try:
    import aioice
    import aioice.stun
    import aiortc
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCIceTransportPolicy,
        RTCPeerConnection,
        RTCSessionDescription,
    )
except ImportError as e:  # pragma: no cover - environment problem
    die(
        f"cannot import aiortc ({e}); install it with "
        "`python3 -m pip install -r tests/aiortc/requirements.txt` (.ci/run does this)"
    )


def payload(i: int) -> bytes:
    """Message i: its length and content depend on i, so truncation, corruption and reordering
    all show."""
    length = 1 + (i * 97) % 1200
    seed = hashlib.sha256(i.to_bytes(4, "big")).digest()
    return i.to_bytes(4, "big") + (seed * (length // len(seed) + 1))[:length]


def write_atomically(path: str, text: str) -> None:
    """Write then rename, so the other peer never reads half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


async def read_when_present(path: str, deadline: float) -> str:
    # Bounded: one look per 20 ms until the deadline.
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
        await asyncio.sleep(0.02)
    fail(f"timed out waiting for {path} from the other peer")
    return ""  # unreachable


async def wait_for(event: asyncio.Event, what: str, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        fail(f"timed out before {what}")
    try:
        await asyncio.wait_for(event.wait(), remaining)
    except asyncio.TimeoutError:
        fail(f"timed out waiting for {what}")


def count_candidates(sdp: str) -> dict:
    counts = {"host": 0, "srflx": 0, "prflx": 0, "relay": 0}
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            typ = fields[fields.index("typ") + 1] if "typ" in fields else "?"
            counts[typ] = counts.get(typ, 0) + 1
    return counts


def selected_pair(pc: RTCPeerConnection):
    """The pair aioice nominated (aiortc exposes no candidate-pair stats); a change in aioice's
    internals fails loudly rather than passing."""
    sctp = pc.sctp
    if sctp is None:
        fail("no SCTP transport after connecting")
    connection = getattr(sctp.transport.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if not isinstance(nominated, dict) or not nominated:
        fail(
            f"cannot read the nominated ICE pair (aioice {aioice.__version__}: "
            "RTCIceTransport._connection._nominated); update this script"
        )
    return list(nominated.values())[0]


async def run(args) -> None:
    deadline = time.monotonic() + args.timeout
    aioice.stun.RETRY_MAX = args.stun_retries
    servers = [
        RTCIceServer(urls=[url], username=args.user, credential=args.password)
        if url.startswith("turn:")
        else RTCIceServer(urls=[url])
        for url in args.ice_url
    ]
    policy = RTCIceTransportPolicy.RELAY if args.policy == "relay" else RTCIceTransportPolicy.ALL
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=policy))
    try:
        await negotiate_and_check(args, pc, deadline)
    finally:
        await asyncio.wait_for(pc.close(), 10)


async def negotiate_and_check(args, pc: RTCPeerConnection, deadline: float) -> None:
    offer_path = os.path.join(args.signal_dir, "offer.sdp")
    answer_path = os.path.join(args.signal_dir, "answer.sdp")
    opened = asyncio.Event()
    finished = asyncio.Event()
    ice_failed = asyncio.Event()
    errors = []
    state = {"received": 0, "channel": None}

    @pc.on("iceconnectionstatechange")
    def _on_ice_state():
        if pc.iceConnectionState == "failed":
            ice_failed.set()

    def on_message(msg):
        if msg == b"done":
            finished.set()
            return
        expected = payload(state["received"])
        if msg != expected:
            errors.append(
                f"message #{state['received']} differs (got {len(msg)} bytes, "
                f"expected {len(expected)})"
            )
            finished.set()
            return
        state["received"] += 1
        if args.role == "answer":
            state["channel"].send(msg)  # echo
        elif state["received"] == args.count:
            finished.set()

    def attach(channel):
        state["channel"] = channel
        channel.on("message", on_message)
        if channel.readyState == "open":
            opened.set()
        channel.on("open", opened.set)

    if args.role == "offer":
        attach(pc.createDataChannel("nat-test", ordered=True))
        await asyncio.wait_for(pc.setLocalDescription(await pc.createOffer()), args.timeout)
        write_atomically(offer_path, pc.localDescription.sdp)
        local_sdp = pc.localDescription.sdp
        report_candidates(args, local_sdp)
        answer = await read_when_present(answer_path, deadline)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    else:
        pc.on("datachannel", attach)
        offer = await read_when_present(offer_path, deadline)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await asyncio.wait_for(pc.setLocalDescription(await pc.createAnswer()), args.timeout)
        write_atomically(answer_path, pc.localDescription.sdp)
        report_candidates(args, pc.localDescription.sdp)

    if args.expect == "fail":
        opened_task = asyncio.ensure_future(opened.wait())
        failed_task = asyncio.ensure_future(ice_failed.wait())
        done, pending = await asyncio.wait(
            [opened_task, failed_task],
            timeout=max(0.0, deadline - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        for t in pending:
            t.cancel()
        if opened.is_set():
            fail("the data channel opened, but this case expects ICE to fail")
        if not ice_failed.is_set():
            fail(f"ICE did not fail within {args.timeout}s (state {pc.iceConnectionState})")
        print(f"OK: ICE failed as expected (state {pc.iceConnectionState})", flush=True)
        return

    await wait_for(opened, "the data channel to open", deadline)
    pair = selected_pair(pc)
    local, remote = pair.local_candidate, pair.remote_candidate
    print(
        f"SELECTED local={local.type} remote={remote.type} protocol={local.transport.lower()} "
        f"({local.host}:{local.port} -> {remote.host}:{remote.port})",
        flush=True,
    )
    if args.role == "offer":
        for i in range(args.count):
            state["channel"].send(payload(i))
        await wait_for(finished, f"{args.count} echoes", deadline)
        state["channel"].send(b"done")
        # Give SCTP a moment to deliver "done" before this side closes.
        await asyncio.sleep(0.5)
    else:
        await wait_for(finished, "the offerer's done", deadline)
    if errors:
        fail("; ".join(errors))
    if state["received"] != args.count:
        fail(f"received {state['received']} messages, expected {args.count}")
    what = "echoes" if args.role == "offer" else "messages (echoed)"
    print(f"OK: {args.count} {what} intact and in order", flush=True)


def report_candidates(args, sdp: str) -> None:
    c = count_candidates(sdp)
    print(f"CANDIDATES host={c['host']} srflx={c['srflx']} relay={c['relay']}", flush=True)
    total = sum(c.values())
    if total == 0:
        fail(f"no ICE candidate gathered with {args.ice_url}")
    if args.policy == "relay" and c["relay"] != total:
        fail(f"non-relay candidates offered despite relay-only policy: {c}")
    if args.require_srflx and c["srflx"] == 0:
        fail(f"no server-reflexive candidate gathered from {args.ice_url}: {c}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["offer", "answer"], required=True)
    parser.add_argument("--signal-dir", required=True)
    parser.add_argument("--ice-url", required=True, action="append",
                        help="stun:HOST:PORT or turn:HOST:PORT?transport=udp|tcp; repeatable")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--password", default="alice-pw")
    parser.add_argument("--policy", choices=["all", "relay"], default="all")
    parser.add_argument("--expect", choices=["connect", "fail"], default="connect")
    parser.add_argument("--require-srflx", action="store_true")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole run")
    parser.add_argument("--stun-retries", type=int, default=4)
    parser.add_argument("--verbose", action="store_true", help="aiortc/aioice debug logs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout + 15))
    except CheckFailed as e:
        die(str(e))
    except asyncio.TimeoutError:
        die(f"the whole run exceeded {args.timeout + 15:.0f}s")


if __name__ == "__main__":
    main()
