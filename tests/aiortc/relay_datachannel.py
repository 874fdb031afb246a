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


class Echo:
    """A's data channel to B, and B echoing every message back: the handlers and their counts.
    `xdp_datachannel.py` drives the same exchange through the kernel fast path."""

    def __init__(self, pc_a: RTCPeerConnection, pc_b: RTCPeerConnection, count: int, label: str):
        self.count = count
        self.a_open, self.a_done, self.b_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.errors = []
        self.received_by_b = self.echoed_to_a = 0
        self.channel_a = pc_a.createDataChannel(label, ordered=True)
        self.channel_a.on("open", self.a_open.set)
        self.channel_a.on("message", self._on_a_message)
        pc_b.on("datachannel", self._on_datachannel)

    def _intact(self, who: str, i: int, msg: bytes, done: asyncio.Event) -> bool:
        expected = payload(b"A", i)
        if msg == expected:
            return True
        self.errors.append(
            f"{who} #{i} differs (got {len(msg)} bytes starting {bytes(msg[:5])!r}, "
            f"expected {len(expected)} bytes starting {expected[:5]!r})"
        )
        done.set()
        return False

    def _on_a_message(self, msg) -> None:
        if not self._intact("A: echo", self.echoed_to_a, msg, self.a_done):
            return
        self.echoed_to_a += 1
        if self.echoed_to_a == self.count:
            self.a_done.set()

    def _on_datachannel(self, channel_b) -> None:
        @channel_b.on("message")
        def _on_b_message(msg):
            if not self._intact("B: message", self.received_by_b, msg, self.b_done):
                return
            self.received_by_b += 1
            channel_b.send(msg)  # echo back
            if self.received_by_b == self.count:
                self.b_done.set()

    async def run(self, deadline: float) -> float:
        """Sends the messages, waits for every echo, fails on any difference; the seconds it
        took."""
        count = self.count
        started = time.monotonic()
        for i in range(count):
            self.channel_a.send(payload(b"A", i))
        await wait_for(self.b_done, f"B to receive {count} messages", deadline)
        await wait_for(self.a_done, f"A to receive {count} echoes", deadline)
        if self.errors:
            fail("; ".join(self.errors))
        if self.received_by_b != count or self.echoed_to_a != count:
            fail(f"B received {self.received_by_b}, A got {self.echoed_to_a} echoes, "
                 f"expected {count} each")
        return time.monotonic() - started


def check_relay_pairs(pcs) -> None:
    """Prints each connection's selected pair and fails unless it is relay -> relay."""
    for pc, name in pcs:
        for pair in nominated_pairs(pc, name):
            local, remote = pair.local_candidate, pair.remote_candidate
            print(
                f"{name}: selected pair {local.type} {local.host}:{local.port} -> "
                f"{remote.type} {remote.host}:{remote.port}",
                flush=True,
            )
            if local.type != "relay" or remote.type != "relay":
                fail(f"{name}: selected pair is {local.type} -> {remote.type}, not relay -> relay")


async def exchange(args, pc_a, pc_b, deadline, url) -> None:
    count = args.count
    echo = Echo(pc_a, pc_b, count, "turnd-itest")

    # Offer/answer in one process: aiortc gathers all candidates (here: relay only) before
    # setLocalDescription returns, so no trickle ICE is needed.
    await asyncio.wait_for(pc_a.setLocalDescription(await pc_a.createOffer()), args.timeout)
    check_relay_only(pc_a.localDescription.sdp, "A", url)
    await pc_b.setRemoteDescription(pc_a.localDescription)
    await asyncio.wait_for(pc_b.setLocalDescription(await pc_b.createAnswer()), args.timeout)
    check_relay_only(pc_b.localDescription.sdp, "B", url)
    await pc_a.setRemoteDescription(pc_b.localDescription)

    await wait_for(echo.a_open, "the data channel to open (ICE + DTLS + SCTP through the relay)", deadline)
    for pc, name in ((pc_a, "A"), (pc_b, "B")):
        if pc.iceConnectionState not in ("connected", "completed"):
            fail(f"{name}: ICE state is {pc.iceConnectionState} after the channel opened")
    check_relay_pairs(((pc_a, "A"), (pc_b, "B")))

    elapsed = await echo.run(deadline)
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
