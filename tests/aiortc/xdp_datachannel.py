#!/usr/bin/env python3
"""Two aiortc peers, relay-only ICE through turnd with its XDP fast path, counted datagram by
datagram at both ends.

Run by tests/xdp_relay/aiortc.rs (root: it joins network namespaces the test made):

    python3 tests/aiortc/xdp_datachannel.py --host 10.78.1.1 --port 3478 \
        --netns-a NS --netns-b NS --metrics-netns NS --metrics http://ADDR/metrics \
        [--user alice --password alice-pw] [--count 1000] [--timeout 60]

One process holds both RTCPeerConnections, and each gathers its candidates (the only moment
aioice opens a socket: one UDP socket per TURN allocation) inside its own network namespace,
joined with setns(2) just before: peer A's socket lives in ``--netns-a``, B's in ``--netns-b``.
Two namespaces on two veths put the relay's hairpin onto ``bpf_redirect``; one namespace for
both puts it onto ``XDP_TX``. One process, because the counts below must be read at one instant
on both sides, with nothing in flight.

What it counts: every datagram each peer's TURN client (aioice's ``TurnClientUdpProtocol``)
hands to or takes from its socket, as turnd counts them: ChannelData payload bytes, split into
DTLS records (first byte 20..63, RFC 7983) and STUN (ICE checks and consent freshness, RFC
7675); and each peer's DTLS transport counters (aiortc's RTCTransportStats: bytesSent,
packetsSent, bytesReceived, packetsReceived).

When: three snapshots — ``open`` (the data channel is open: ICE, DTLS and SCTP are up, both
channels bound), ``done`` (COUNT messages A -> B arrived intact and in order, and each echo
B -> A too) and ``closed`` (both peer connections closed, their allocations deleted). Each is
taken once no datagram has moved at either peer for QUIET seconds; then turnd's /metrics is
read (from ``--metrics-netns``), and the peers' counts are read again after the event loop has
run: unchanged, or the snapshot is taken again (bounded). So turnd's counters and the peers'
describe the same instant, with nothing in flight.

The script checks the exchange (as tests/aiortc/relay_datachannel.py does: relay-only
candidates, a relay -> relay pair, every message intact and in order) and prints one line
``RESULT <json>`` with the snapshots; the test asserts the accounting.
"""

import argparse
import asyncio
import ctypes
import json
import os
import socket
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay_datachannel import (  # noqa: E402
    CheckFailed,
    Echo,
    check_relay_only,
    check_relay_pairs,
    die,
    fail,
    wait_for,
)

import aioice  # noqa: E402
import aiortc  # noqa: E402
from aioice import turn  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

# No datagram at either peer for this long: nothing is in flight (a veth crossing and turnd's
# work take microseconds).
QUIET = 0.5
# Snapshots retaken when a datagram moved while /metrics was read (a consent check every
# ~5 s is the only traffic once the exchange is over).
SNAPSHOT_ATTEMPTS = 10

CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_libc = ctypes.CDLL(None, use_errno=True)


def setns(name: str) -> None:
    """Moves this thread (the event loop's) into network namespace NAME: sockets made from now
    on live there; those made before keep theirs."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            die(f"setns({name}): {os.strerror(err)} (the test runs as root)")
    finally:
        os.close(fd)


def big_receive_buffer(sock) -> None:
    """An 8 MB receive buffer (SO_RCVBUFFORCE: the test is root) on a TURN client's socket, in
    place of the 256 kB aioice asks for. The kernel relays SCTP's bursts faster than a Python
    event loop reads them, and frames relayed by generic XDP become socket buffers with a
    larger truesize than the stack's own: with aioice's buffer, 1,024 of about 6,600 datagrams
    were dropped at the receiving sockets in generic mode (UDP RcvbufErrors), which says nothing
    about the relay. The test checks RcvbufErrors stays 0 in the clients' namespaces."""
    if sock is None:
        fail("aioice's TURN transport has no socket to size")
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)


class Counts:
    """One peer's TURN-level datagrams, as its aioice TURN client sent and received them."""

    def __init__(self) -> None:
        self.c = {
            f"{way}_{kind}_{unit}": 0
            for way in ("sent", "received")
            for kind in ("dtls", "stun", "other")
            for unit in ("datagrams", "bytes")
        }
        self.c["sent_stun_to_server"] = 0
        self.c["received_stun_from_server"] = 0

    def channel_data(self, way: str, data: bytes) -> None:
        length = int.from_bytes(data[2:4], "big")
        first = data[4] if length else None
        if first is not None and 20 <= first <= 63:
            kind = "dtls"
        elif first is not None and first <= 3:
            kind = "stun"
        else:
            kind = "other"
        self.c[f"{way}_{kind}_datagrams"] += 1
        self.c[f"{way}_{kind}_bytes"] += length


# Which peer the TURN client protocols made from now on belong to (set before each gathers).
_current_peer = None
_counts = {"A": Counts(), "B": Counts()}


def is_channel_data(data: bytes) -> bool:
    return len(data) >= 4 and 0x40 <= data[0] <= 0x4F


def instrument() -> None:
    """Counts at aioice's TURN-over-UDP client: what it writes to and reads from its socket."""
    cls = turn.TurnClientUdpProtocol
    for name in ("__init__", "_send", "datagram_received"):
        if not callable(getattr(cls, name, None)):
            fail(f"aioice {aioice.__version__}: TurnClientUdpProtocol.{name} is gone; update this script")
    init, send, received = cls.__init__, cls._send, cls.datagram_received

    def counted_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._turnd_counts = _counts[_current_peer]
        self._turnd_sized = False

    def counted_send(self, data: bytes) -> None:
        if not self._turnd_sized:
            # The first send (the Allocate) comes after aioice sized the buffer itself.
            big_receive_buffer(self.transport.get_extra_info("socket"))
            self._turnd_sized = True
        if is_channel_data(data):
            self._turnd_counts.channel_data("sent", data)
        else:
            self._turnd_counts.c["sent_stun_to_server"] += 1
        send(self, data)

    def counted_received(self, data, addr) -> None:
        if is_channel_data(data):
            self._turnd_counts.channel_data("received", data)
        else:
            self._turnd_counts.c["received_stun_from_server"] += 1
        received(self, data, addr)

    cls.__init__ = counted_init
    cls._send = counted_send
    cls.datagram_received = counted_received


def dtls_stats(pc: RTCPeerConnection, name: str) -> dict:
    """The peer's RTCTransportStats (its DTLS transport: what it handed to ICE and got from it)."""
    dtls = pc.sctp.transport if pc.sctp is not None else None
    get = getattr(dtls, "_get_stats", None)
    if get is None:
        fail(f"{name}: aiortc {aiortc.__version__} has no RTCDtlsTransport._get_stats; update this script")
    stats = [s for s in get().values() if getattr(s, "type", None) == "transport"]
    if len(stats) != 1:
        fail(f"{name}: expected one transport stats entry, got {len(stats)}")
    s = stats[0]
    return {
        "bytesSent": s.bytesSent,
        "packetsSent": s.packetsSent,
        "bytesReceived": s.bytesReceived,
        "packetsReceived": s.packetsReceived,
    }


def peer_counts(pcs) -> dict:
    out = {name: dict(_counts[name].c) for name in ("A", "B")}
    for name, pc in pcs:
        out[name]["dtls_stats"] = dtls_stats(pc, name)
    return out


def read_metrics(args) -> dict:
    """turnd's counters from /metrics, read from the relay's namespace (and back)."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(args.metrics_netns)
        with urllib.request.urlopen(args.metrics, timeout=5) as r:
            text = r.read().decode()
    finally:
        _libc.setns(back, CLONE_NEWNET)
        os.close(back)
    series = {}
    for line in text.splitlines():
        if line.startswith(("turnd_xdp_", "turnd_relayed_")):
            name, _, value = line.rpartition(" ")
            series[name] = int(float(value))
    return series


async def snapshot(args, pcs, what: str, deadline: float) -> dict:
    for _attempt in range(SNAPSHOT_ATTEMPTS):
        before = peer_counts(pcs)
        quiet_since = time.monotonic()
        # Bounded by the deadline: one look per 50 ms.
        while time.monotonic() - quiet_since < QUIET:
            if time.monotonic() > deadline:
                fail(f"timed out waiting for the traffic to settle ({what})")
            await asyncio.sleep(0.05)
            now = peer_counts(pcs)
            if now != before:
                before, quiet_since = now, time.monotonic()
        metrics = read_metrics(args)
        # Datagrams that arrived while /metrics was read reach the counters once the loop runs.
        await asyncio.sleep(0.1)
        if peer_counts(pcs) == before:
            return {"peers": before, "metrics": metrics}
    fail(f"traffic never settled around a /metrics read ({what}, {SNAPSHOT_ATTEMPTS} attempts)")


async def run(args) -> dict:
    global _current_peer
    deadline = time.monotonic() + args.timeout
    url = f"turn:{args.host}:{args.port}?transport=udp"
    config = RTCConfiguration(
        iceServers=[RTCIceServer(urls=[url], username=args.user, credential=args.password)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )
    pc_a = RTCPeerConnection(configuration=config)
    pc_b = RTCPeerConnection(configuration=config)
    pcs = (("A", pc_a), ("B", pc_b))
    snapshots = {}
    count = args.count
    try:
        echo = Echo(pc_a, pc_b, count, "turnd-xdp")

        # Each peer gathers (opens its TURN socket) in its own namespace.
        _current_peer = "A"
        setns(args.netns_a)
        await asyncio.wait_for(pc_a.setLocalDescription(await pc_a.createOffer()), args.timeout)
        check_relay_only(pc_a.localDescription.sdp, "A", url)
        _current_peer = "B"
        setns(args.netns_b)
        await pc_b.setRemoteDescription(pc_a.localDescription)
        await asyncio.wait_for(pc_b.setLocalDescription(await pc_b.createAnswer()), args.timeout)
        check_relay_only(pc_b.localDescription.sdp, "B", url)
        _current_peer = None
        await pc_a.setRemoteDescription(pc_b.localDescription)

        await wait_for(echo.a_open, "the data channel to open (ICE + DTLS + SCTP through the relay)", deadline)
        check_relay_pairs((pc, name) for name, pc in pcs)
        snapshots["open"] = await snapshot(args, pcs, "open", deadline)

        elapsed = await echo.run(deadline)
        print(f"OK: {count} messages A->B and {count} echoes B->A intact and in order in "
              f"{elapsed:.2f}s (aiortc {aiortc.__version__}, aioice "
              f"{aioice.__version__})", flush=True)
        snapshots["done"] = await snapshot(args, pcs, "done", deadline)
    finally:
        await asyncio.wait_for(asyncio.gather(pc_a.close(), pc_b.close()), 10)
    # The DTLS transports are gone: the last counts are the TURN clients' alone.
    snapshots["closed"] = await snapshot(args, (), "closed", deadline + 10)
    return snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--netns-a", required=True)
    parser.add_argument("--netns-b", required=True)
    parser.add_argument("--metrics-netns", required=True)
    parser.add_argument("--metrics", required=True, help="turnd's /metrics URL")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--password", default="alice-pw")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole run")
    args = parser.parse_args()
    print(f"aiortc {aiortc.__version__}, aioice {aioice.__version__}, python {sys.version.split()[0]}",
          flush=True)
    try:
        instrument()
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout + 30))
    except CheckFailed as e:
        die(str(e))
    except asyncio.TimeoutError:
        die(f"the whole run exceeded {args.timeout + 30:.0f}s")
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
