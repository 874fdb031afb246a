#!/usr/bin/env python3
"""Two aiortc peers, relay-only ICE through one TURN server, 1,000 data-channel messages.

Run by tests/aiortc.rs against a server it starts; can also be run by hand:

    python3 tests/aiortc/relay_datachannel.py --port 3478 [--host 127.0.0.1] \
        [--transport udp|tcp] [--user alice --password alice-pw] [--count 1000] [--timeout 60]

What it checks, exiting non-zero with a message naming the failed check:
- both RTCPeerConnections reach "connected" with the TURN server as their ONLY ICE server
  (``turn:HOST:PORT?transport=udp``, or ``transport=tcp`` with ``--transport tcp``: TURN over
  TCP to the server, UDP from the relay to the peer) and relay-only ICE;
- the ICE pair each side nominated is relay <-> relay (so every byte crossed the server);
- peer A sends COUNT messages on an ordered, reliable data channel; B checks each arrives intact
  and in order and echoes it back; A checks the echoes the same way;
- everything finishes within TIMEOUT seconds.

Relay-only ICE: aiortc >= 1.6 accepts ``RTCConfiguration(iceTransportPolicy=
RTCIceTransportPolicy.RELAY)`` (the browser spelling), which it passes to aioice as
``TransportPolicy.RELAY``: no host or server-reflexive candidates are gathered at all. Older
aiortc lacks the field; this script then stops with an error rather than testing less.

The selected pair is read from aioice's ``Connection._nominated`` (aiortc exposes no
candidate-pair stats); the attribute path is checked and a change in aioice fails loudly.
"""

import argparse
import asyncio
import hashlib
import logging
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
    import aiortc
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCPeerConnection,
    )
except ImportError as e:  # pragma: no cover - environment problem
    die(
        f"cannot import aiortc ({e}); install it with "
        "`python3 -m pip install -r tests/aiortc/requirements.txt` (.ci/run does this)"
    )

try:
    from aiortc import RTCIceTransportPolicy
except ImportError:  # pragma: no cover - old aiortc
    die(
        f"aiortc {aiortc.__version__} has no RTCIceTransportPolicy: relay-only ICE cannot be "
        "requested; install the version pinned in tests/aiortc/requirements.txt"
    )


def payload(direction: bytes, i: int) -> bytes:
    """A message whose length and content depend on its index, so truncation, corruption and
    reordering are all visible. Lengths span 1 byte to ~1.2 kB (one SCTP chunk)."""
    length = 1 + (i * 97) % 1200
    seed = hashlib.sha256(direction + i.to_bytes(4, "big")).digest()
    body = (seed * (length // len(seed) + 1))[:length]
    return direction + i.to_bytes(4, "big") + body


async def wait_for(event: asyncio.Event, what: str, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        fail(f"timed out before {what}")
    try:
        await asyncio.wait_for(event.wait(), remaining)
    except asyncio.TimeoutError:
        fail(f"timed out waiting for {what}")


def nominated_pairs(pc: RTCPeerConnection, name: str):
    """The ICE candidate pairs aioice nominated for this peer connection's transport."""
    sctp = pc.sctp
    if sctp is None:
        fail(f"{name}: no SCTP transport after connecting")
    ice_transport = sctp.transport.transport  # RTCSctpTransport -> RTCDtlsTransport -> RTCIceTransport
    connection = getattr(ice_transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if not isinstance(nominated, dict):
        fail(
            f"{name}: cannot read the nominated ICE pair (aioice {aioice.__version__} changed "
            "RTCIceTransport._connection._nominated); update this script"
        )
    if not nominated:
        fail(f"{name}: ICE connected but no pair was nominated")
    return list(nominated.values())


async def run(args) -> None:
    deadline = time.monotonic() + args.timeout
    # turns: is TURN over TLS (always TCP underneath); aioice verifies the server's certificate
    # against the default CA store, which SSL_CERT_FILE can point at a test CA.
    url = f"{args.scheme}:{args.host}:{args.port}?transport={args.transport}"
    config = RTCConfiguration(
        iceServers=[RTCIceServer(urls=[url], username=args.user, credential=args.password)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )
    pc_a = RTCPeerConnection(configuration=config)
    pc_b = RTCPeerConnection(configuration=config)
    try:
        await exchange(args, pc_a, pc_b, deadline, url)
    finally:
        await asyncio.wait_for(asyncio.gather(pc_a.close(), pc_b.close()), 10)


async def exchange(args, pc_a, pc_b, deadline, url) -> None:
    count = args.count
    a_open = asyncio.Event()
    b_done = asyncio.Event()
    a_done = asyncio.Event()
    errors = []
    received_by_b = 0
    echoed_to_a = 0

    channel_a = pc_a.createDataChannel("turnd-itest", ordered=True)

    @channel_a.on("open")
    def _on_a_open():
        a_open.set()

    @channel_a.on("message")
    def _on_a_message(msg):
        nonlocal echoed_to_a
        expected = payload(b"A", echoed_to_a)
        if msg != expected:
            errors.append(
                f"A: echo #{echoed_to_a} differs (got {len(msg)} bytes starting {bytes(msg[:5])!r}, "
                f"expected {len(expected)} bytes starting {expected[:5]!r})"
            )
            a_done.set()
            return
        echoed_to_a += 1
        if echoed_to_a == count:
            a_done.set()

    @pc_b.on("datachannel")
    def _on_datachannel(channel_b):
        @channel_b.on("message")
        def _on_b_message(msg):
            nonlocal received_by_b
            expected = payload(b"A", received_by_b)
            if msg != expected:
                errors.append(
                    f"B: message #{received_by_b} differs (got {len(msg)} bytes starting "
                    f"{bytes(msg[:5])!r}, expected {len(expected)} bytes starting {expected[:5]!r})"
                )
                b_done.set()
                return
            received_by_b += 1
            channel_b.send(msg)  # echo back
            if received_by_b == count:
                b_done.set()

    # Offer/answer in one process: aiortc gathers all candidates (here: relay only) before
    # setLocalDescription returns, so no trickle ICE is needed.
    await asyncio.wait_for(pc_a.setLocalDescription(await pc_a.createOffer()), args.timeout)
    check_relay_only(pc_a.localDescription.sdp, "A", url)
    await pc_b.setRemoteDescription(pc_a.localDescription)
    await asyncio.wait_for(pc_b.setLocalDescription(await pc_b.createAnswer()), args.timeout)
    check_relay_only(pc_b.localDescription.sdp, "B", url)
    await pc_a.setRemoteDescription(pc_b.localDescription)

    await wait_for(a_open, "the data channel to open (ICE + DTLS + SCTP through the relay)", deadline)
    for pc, name in ((pc_a, "A"), (pc_b, "B")):
        if pc.iceConnectionState not in ("connected", "completed"):
            fail(f"{name}: ICE state is {pc.iceConnectionState} after the channel opened")
        for pair in nominated_pairs(pc, name):
            local, remote = pair.local_candidate, pair.remote_candidate
            print(
                f"{name}: selected pair {local.type} {local.host}:{local.port} -> "
                f"{remote.type} {remote.host}:{remote.port}",
                flush=True,
            )
            if local.type != "relay" or remote.type != "relay":
                fail(f"{name}: selected pair is {local.type} -> {remote.type}, not relay -> relay")

    started = time.monotonic()
    for i in range(count):
        channel_a.send(payload(b"A", i))
    await wait_for(b_done, f"B to receive {count} messages", deadline)
    await wait_for(a_done, f"A to receive {count} echoes", deadline)
    if errors:
        fail("; ".join(errors))
    if received_by_b != count or echoed_to_a != count:
        fail(f"B received {received_by_b}, A got {echoed_to_a} echoes, expected {count} each")
    elapsed = time.monotonic() - started
    print(
        f"OK: {count} messages A->B and {count} echoes B->A intact and in order through "
        f"{url} in {elapsed:.2f}s (aiortc {aiortc.__version__}, aioice {aioice.__version__})",
        flush=True,
    )


def check_relay_only(sdp: str, name: str, url: str) -> None:
    candidates = [l for l in sdp.splitlines() if l.startswith("a=candidate:")]
    if not candidates:
        fail(f"{name}: no ICE candidate gathered from {url} (Allocate refused or unanswered? rerun with --verbose)")
    for c in candidates:
        if " typ relay" not in c:
            fail(f"{name}: non-relay candidate offered despite relay-only policy: {c}")
    print(f"{name}: {len(candidates)} relay candidate(s): {candidates}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--transport", choices=["udp", "tcp"], default="udp",
                        help="client-to-server transport of the TURN URL")
    parser.add_argument("--scheme", choices=["turn", "turns"], default="turn",
                        help="turns: TURN over TLS (needs --transport tcp)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="alice")
    parser.add_argument("--password", default="alice-pw")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole run")
    parser.add_argument("--verbose", action="store_true", help="aiortc/aioice debug logs")
    args = parser.parse_args()
    if args.scheme == "turns" and args.transport != "tcp":
        parser.error("turns: runs over TCP: use --transport tcp")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    print(f"aiortc {aiortc.__version__}, aioice {aioice.__version__}, python {sys.version.split()[0]}", flush=True)
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout + 15))
    except CheckFailed as e:
        die(str(e))
    except asyncio.TimeoutError:
        die(f"the whole run exceeded {args.timeout + 15:.0f}s")


if __name__ == "__main__":
    main()
