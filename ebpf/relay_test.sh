#!/usr/bin/env bash
# Packet-level test of ebpf/turnd_xdp.c's relaying through BPF_PROG_TEST_RUN
# (`bpftool prog run`): crafted frames against map entries written here, each
# output frame compared byte for byte with one built independently in Python
# (headers and checksums computed in full, not incrementally), and the
# counters checked exactly. Covers both directions over IPv4 and IPv6,
# ChannelData padding (odd and even lengths, non-zero padding bytes), the IPv4
# zero UDP checksum, an Ethernet trailer, DF, and what must go up unchanged:
# no entry, an expired entry, no route, an IPv6 zero checksum, a datagram too
# large for the egress MTU.
#
# Root; clang, libbpf-dev, bpftool, iproute2, python3. Runs in a private mount
# and network namespace (unshare -m -n): a veth pair with the relay's
# addresses and static neighbour entries is what bpf_fib_lookup sees, bpffs is
# mounted only there, and nothing is left behind.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

clang -target bpf -O2 -g -Wall -Werror -I"/usr/include/$(gcc -dumpmachine)" \
	-c "$HERE/turnd_xdp.c" -o "$OUT/turnd_xdp.o"

unshare -m -n python3 - "$OUT" <<'PY'
import json, os, struct, subprocess, sys

out = sys.argv[1]

def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(args)}: {r.stdout}{r.stderr}")
    return r.stdout

# --- the relay's network: veth `r` (relay side) <-> `o` (the outside) -----
RELAY_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000009")
CLIENT_MAC = bytes.fromhex("020000000002")
CLIENT2_MAC = bytes.fromhex("020000000003")
sh("ip", "link", "set", "lo", "up")
sh("ip", "link", "add", "r", "address", RELAY_MAC.hex(":"), "mtu", "1500", "type", "veth",
   "peer", "name", "o")
sh("ip", "addr", "add", "10.0.0.1/24", "dev", "r")
sh("ip", "addr", "add", "fd00::1/64", "dev", "r", "nodad")
sh("ip", "link", "set", "r", "up")
sh("ip", "link", "set", "o", "up")
for ip, mac in [("10.0.0.9", PEER_MAC), ("10.0.0.2", CLIENT_MAC), ("10.0.0.3", CLIENT2_MAC),
                ("fd00::9", PEER_MAC), ("fd00::2", CLIENT_MAC), ("fd00::3", CLIENT2_MAC)]:
    sh("ip", "neigh", "replace", ip, "lladdr", mac.hex(":"), "dev", "r", "nud", "permanent")
# bpf_fib_lookup asks the ingress interface to forward (its ingress view);
# turnd's docs say so (docs/xdp.md, Forwarding).
sh("sysctl", "-qw", "net.ipv4.conf.all.forwarding=1")
sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
IFINDEX = json.loads(sh("ip", "-j", "link", "show", "r"))[0]["ifindex"]

sh("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
os.mkdir("/sys/fs/bpf/m")
sh("bpftool", "prog", "load", f"{out}/turnd_xdp.o", "/sys/fs/bpf/p", "type", "xdp",
   "pinmaps", "/sys/fs/bpf/m")

# --- checksums and headers, computed in full ------------------------------
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def ipb(a):
    import ipaddress
    return ipaddress.ip_address(a).packed

def udp(src, dst, sport, dport, payload, zero=False):
    length = 8 + len(payload)
    if zero:
        return struct.pack("!HHHH", sport, dport, length, 0) + payload
    s, d = ipb(src), ipb(dst)
    pseudo = s + d + (struct.pack("!BBH", 0, 17, length) if len(s) == 4
                      else struct.pack("!IxxxB", length, 17))
    c = csum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + payload

def ip4(src, dst, l4, ident=0x1234, df=False, ttl=57, tos=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(l4), ident, 0x4000 if df else 0,
                    ttl, 17, 0, ipb(src), ipb(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + l4

def ip6(src, dst, l4, hop=57, flow=0):
    return struct.pack("!IHBB", (6 << 28) | flow, len(l4), 17, hop) + ipb(src) + ipb(dst) + l4

def eth(dst, src, l3):
    return dst + src + (b"\x08\x00" if l3[0] >> 4 == 4 else b"\x86\xdd") + l3

def cd(ch, data, pad=b""):
    return struct.pack("!HH", ch, len(data)) + data + pad

# --- map entries (src/shell/xdp/maps.rs's layouts) ------------------------
FAR = 0xFFFF_FFFF_FFFF_FFFF
def a16(a):
    b = ipb(a)
    return b + b"\0" * (16 - len(b))
def fam(a):
    return 4 if len(ipb(a)) == 4 else 6
def chan_in(client, cport, listen, lport, ch, relay, rport, peer, pport, slot, exp, df=0):
    key = a16(client) + a16(listen) + struct.pack("!HH", cport, lport) + \
        struct.pack("<HBx", ch, fam(client))
    val = a16(relay) + a16(peer) + struct.pack("!HH", rport, pport) + \
        struct.pack("<IQBB6x", slot, exp, fam(peer), df)
    return key, val
def chan_out(relay, rport, peer, pport, client, cport, listen, lport, ch, slot, exp):
    key = a16(relay) + a16(peer) + struct.pack("!HH", rport, pport) + \
        struct.pack("<B3x", fam(peer))
    val = a16(client) + a16(listen) + struct.pack("!HH", cport, lport) + \
        struct.pack("<HxxIxxxxQB7x", ch, slot, exp, fam(client))
    return key, val
def update(m, key, val):
    sh("bpftool", "map", "update", "pinned", f"/sys/fs/bpf/m/{m}",
       "key", "hex", *[f"{b:02x}" for b in key], "value", "hex", *[f"{b:02x}" for b in val])

sh("bpftool", "map", "update", "pinned", "/sys/fs/bpf/m/turnd_ports",
   "key", "hex", "96", "0d", "value", "hex", "01")
for fam_ in ("4", "6"):
    C, L, R, P = (("10.0.0.2", "10.0.0.1", "10.0.0.1", "10.0.0.9") if fam_ == "4"
                  else ("fd00::2", "fd00::1", "fd00::1", "fd00::9"))
    C2 = "10.0.0.3" if fam_ == "4" else "fd00::3"
    # Channel 0x4000: live, both directions. 0x4001: expired. 0x4002: a
    # peer with no route. 0x4003: live, DF.
    for m, (k, v) in [
        ("turnd_chan_in", chan_in(C, 40000, L, 3478, 0x4000, R, 50000, P, 5000, 7, FAR)),
        ("turnd_chan_out", chan_out(R, 50000, P, 5000, C, 40000, L, 3478, 0x4000, 7, FAR)),
        ("turnd_chan_in", chan_in(C, 40000, L, 3478, 0x4001, R, 50001, P, 5001, 7, 1)),
        ("turnd_chan_out", chan_out(R, 50001, P, 5001, C, 40000, L, 3478, 0x4001, 7, 1)),
        ("turnd_chan_in", chan_in(C, 40000, L, 3478, 0x4002, R, 50002,
                                  "192.0.2.99" if fam_ == "4" else "2001:db8::99", 5002, 7, FAR)),
        ("turnd_chan_in", chan_in(C, 40000, L, 3478, 0x4003, R, 50003, P, 5003, 7, FAR, df=1)),
        # Hairpin: 0x4010's peer is another allocation's relayed address (R:50020) on this
        # host, whose client C2 has channel 0x4020 back to R:50010. 0x4011's local peer
        # has no channel back.
        ("turnd_chan_in", chan_in(C, 40000, L, 3478, 0x4010, R, 50010, R, 50020, 7, FAR)),
        ("turnd_chan_out", chan_out(R, 50020, R, 50010, C2, 40002, L, 3478, 0x4020, 7, FAR)),
        ("turnd_chan_in", chan_in(C, 40000, L, 3478, 0x4011, R, 50011, R, 50021, 7, FAR)),
    ]:
        update(m, k, v)

# --- cases: (name, frame, want action, want output frame or None = unchanged)
XDP_PASS, XDP_TX = 2, 3
cases = []
want_count = {}
def add(name, frame, action, expected, counters):
    cases.append((name, frame, action, expected))
    for c, n in counters.items():
        want_count[c] = want_count.get(c, 0) + n

for v in ("4", "6"):
    C, L, R, P = (("10.0.0.2", "10.0.0.1", "10.0.0.1", "10.0.0.9") if v == "4"
                  else ("fd00::2", "fd00::1", "fd00::1", "fd00::9"))
    ipf = ip4 if v == "4" else ip6
    cdv = f"channeldata_v{v}"
    def to_peer_case(name, data, pad=b"", zero=False, trailer=b"", ch=0x4000, port=(50000, 5000), df=False):
        frame = eth(RELAY_MAC, CLIENT_MAC,
                    ipf(C, L, udp(C, L, 40000, 3478, cd(ch, data, pad), zero=zero))) + trailer
        out_ip = (ip4(R, P, udp(R, P, port[0], port[1], data, zero=zero), ttl=64, df=df)
                  if v == "4" else ip6(R, P, udp(R, P, port[0], port[1], data), hop=64))
        add(f"v{v}_to_peer_{name}", frame, XDP_TX, eth(PEER_MAC, RELAY_MAC, out_ip),
            {"seen": 1, cdv: 1, "relayed_to_peer": 1})
    to_peer_case("even", b"abcd" * 8)
    to_peer_case("odd_padded", b"hello", pad=b"\xa5\x5a\xff")
    to_peer_case("odd_unpadded", b"hello")
    to_peer_case("even_padded", b"hi", pad=b"\x01\x02")
    to_peer_case("one_byte_padded", b"\xee", pad=b"\x7f\x80\x81")
    to_peer_case("empty", b"")
    to_peer_case("df", b"dont fragment", pad=b"\0\0\0", ch=0x4003, port=(50003, 5003), df=True)
    if v == "4":
        to_peer_case("zero_checksum", b"no checksum", pad=b"\x09", zero=True)
        # A short frame padded to Ethernet's 60 bytes: the trailer goes.
        to_peer_case("ethernet_trailer", b"x", trailer=b"\0" * 13)

    def to_client_case(name, data, zero=False):
        frame = eth(RELAY_MAC, PEER_MAC, ipf(P, R, udp(P, R, 5000, 50000, data, zero=zero)))
        out_ip = (ip4(L, C, udp(L, C, 3478, 40000, cd(0x4000, data), zero=zero), ttl=64)
                  if v == "4" else ip6(L, C, udp(L, C, 3478, 40000, cd(0x4000, data)), hop=64))
        add(f"v{v}_to_client_{name}", frame, XDP_TX, eth(CLIENT_MAC, RELAY_MAC, out_ip),
            {"seen": 1, "relayed_to_client": 1})
    C2 = "10.0.0.3" if v == "4" else "fd00::3"
    def hairpin_case(name, data, pad=b"", zero=False):
        frame = eth(RELAY_MAC, CLIENT_MAC,
                    ipf(C, L, udp(C, L, 40000, 3478, cd(0x4010, data, pad), zero=zero)))
        out_ip = (ip4(L, C2, udp(L, C2, 3478, 40002, cd(0x4020, data), zero=zero), ttl=64)
                  if v == "4" else ip6(L, C2, udp(L, C2, 3478, 40002, cd(0x4020, data)), hop=64))
        add(f"v{v}_hairpin_{name}", frame, XDP_TX, eth(CLIENT2_MAC, RELAY_MAC, out_ip),
            {"seen": 1, cdv: 1, "relayed_hairpin": 1})
    hairpin_case("even", b"both relayed")
    hairpin_case("odd_padded", b"odd", pad=b"\xf0\x0f\x33"[:1])
    hairpin_case("odd_padded_3", b"x", pad=b"\xf0\x0f\x33")
    if v == "4":
        hairpin_case("zero_checksum", b"no checksum", pad=b"\x01", zero=True)

    to_client_case("even", b"pong" * 5)
    to_client_case("odd", b"hello")
    to_client_case("empty", b"")
    if v == "4":
        to_client_case("zero_checksum", b"no checksum", zero=True)

    def up(name, frame, counters):
        add(f"v{v}_{name}", frame, XDP_PASS, None, dict(counters, seen=1))
    up("unknown_channel", eth(RELAY_MAC, CLIENT_MAC, ipf(C, L, udp(C, L, 40000, 3478, cd(0x4FFF, b"x")))),
       {cdv: 1, "pass_no_entry": 1})
    up("other_client_port", eth(RELAY_MAC, CLIENT_MAC, ipf(C, L, udp(C, L, 40001, 3478, cd(0x4000, b"x")))),
       {cdv: 1, "pass_no_entry": 1})
    up("expired_to_peer", eth(RELAY_MAC, CLIENT_MAC, ipf(C, L, udp(C, L, 40000, 3478, cd(0x4001, b"x")))),
       {cdv: 1, "pass_expired": 1})
    up("expired_to_client", eth(RELAY_MAC, PEER_MAC, ipf(P, R, udp(P, R, 5001, 50001, b"x"))),
       {"pass_expired": 1})
    up("local_peer_without_channel_back", eth(RELAY_MAC, CLIENT_MAC,
        ipf(C, L, udp(C, L, 40000, 3478, cd(0x4011, b"x")))), {cdv: 1, "pass_fib": 1})
    up("no_route", eth(RELAY_MAC, CLIENT_MAC, ipf(C, L, udp(C, L, 40000, 3478, cd(0x4002, b"x")))),
       {cdv: 1, "pass_fib": 1})
    up("unknown_peer_port", eth(RELAY_MAC, PEER_MAC, ipf(P, R, udp(P, R, 5999, 50000, b"x"))),
       {"pass_other_port": 1})
    up("stun", eth(RELAY_MAC, CLIENT_MAC, ipf(C, L, udp(C, L, 40000, 3478,
        struct.pack("!HHI", 1, 0, 0x2112A442) + b"\1" * 12))), {"pass_not_channeldata": 1})
    # 1472 bytes of data: 1500 of IP to the peer fits; to the client the 4
    # more bytes do not (1504 > the MTU of 1500).
    up("too_big_for_mtu", eth(RELAY_MAC, PEER_MAC, ipf(P, R, udp(P, R, 5000, 50000,
        b"m" * (1472 if v == "4" else 1452)))), {"pass_fib": 1})
    if v == "6":
        up("zero_checksum_to_peer", eth(RELAY_MAC, CLIENT_MAC,
            ipf(C, L, udp(C, L, 40000, 3478, cd(0x4000, b"x"), zero=True))),
           {cdv: 1, "pass_unsupported": 1})
        up("zero_checksum_to_client", eth(RELAY_MAC, PEER_MAC,
            ipf(P, R, udp(P, R, 5000, 50000, b"x", zero=True))), {"pass_unsupported": 1})

# --- run each frame ---------------------------------------------------------
failed = []
for name, frame, action, expected in cases:
    fin, fout, ctx = (f"{out}/{name}.in", f"{out}/{name}.out", f"{out}/{name}.ctx")
    open(fin, "wb").write(frame)
    # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    # egress_ifindex.
    open(ctx, "wb").write(struct.pack("<6I", 0, len(frame), 0, IFINDEX, 0, 0))
    r = sh("bpftool", "prog", "run", "pinned", "/sys/fs/bpf/p", "data_in", fin,
           "data_out", fout, "ctx_in", ctx)
    got_action = int(r.split("Return value: ")[1].split()[0].rstrip(","))
    got = open(fout, "rb").read()
    want = frame if expected is None else expected
    if got_action != action or got != want:
        failed.append(name)
        print(f"FAIL {name}: action {got_action} (want {action})\n  got  {got.hex()}\n  want {want.hex()}")
    else:
        print(f"ok   {name}")

names = ["seen", "pass_not_ip", "pass_not_udp", "pass_other_port", "pass_not_channeldata",
         "pass_bad_length", "channeldata_v4", "channeldata_v6", "relayed_to_peer",
         "relayed_to_client", "pass_no_entry", "pass_expired", "pass_fib", "pass_unsupported", "relayed_hairpin"]
def num(x):
    return x if isinstance(x, int) else int.from_bytes(bytes(int(b, 16) for b in x[:8]), "little")
dump = json.loads(sh("bpftool", "-j", "map", "dump", "pinned", "/sys/fs/bpf/m/turnd_counters"))
got = {}
for e in dump:
    k = e["formatted"]["key"] if "formatted" in e else num(e["key"])
    vals = e["formatted"]["values"] if "formatted" in e else e["values"]
    got[names[k]] = sum(num(c["value"]["packets"] if isinstance(c["value"], dict) else c["value"])
                        for c in vals)
for n in names:
    if got.get(n, 0) != want_count.get(n, 0):
        failed.append(f"counter {n}: {got.get(n, 0)} (want {want_count.get(n, 0)})")
# Slot 7's per-allocation counts: what was relayed for it.
stats = json.loads(sh("bpftool", "-j", "map", "lookup", "pinned", "/sys/fs/bpf/m/turnd_alloc_stats",
                      "key", "hex", "07", "00", "00", "00"))
vals = stats["formatted"]["values"] if "formatted" in stats else stats["values"]
packets = sum(c["value"]["to_peer_packets"] + c["value"]["to_client_packets"] for c in vals)
# A hairpin counts for both allocations: to the peer for one, to the client for the other.
if packets != (want_count["relayed_to_peer"] + want_count["relayed_to_client"]
               + 2 * want_count["relayed_hairpin"]):
    failed.append(f"slot 7 counted {packets} packets")
if failed:
    sys.exit(f"FAIL: {failed}")
print(f"OK: {len(cases)} frames relayed or passed as expected, counters exact")
PY
