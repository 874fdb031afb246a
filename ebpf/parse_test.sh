#!/usr/bin/env bash
# Packet-level test of ebpf/turnd_xdp.c's parser through BPF_PROG_TEST_RUN
# (`bpftool prog run`): crafted frames, including the ones sockets cannot
# easily send (IPv4 options, fragments, IPv6 extension headers, VLAN tags,
# truncated headers), each run once; the per-CPU counters must then show
# exactly the expected verdicts, and every frame must come back unchanged
# with XDP_PASS. Root; clang, libbpf-dev, bpftool, python3. bpffs is mounted
# only inside a private mount namespace (unshare -m), so nothing is left
# behind. The later relaying steps extend this with expected output frames
# (checksums, padding) — see docs/xdp.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

clang -target bpf -O2 -g -Wall -Werror -I"/usr/include/$(gcc -dumpmachine)" \
	-c "$HERE/turnd_xdp.c" -o "$OUT/turnd_xdp.o"

# frames/NAME.bin, and expected.json: counter name -> count.
python3 - "$OUT" <<'PY'
import json, os, struct, sys
out = sys.argv[1]; os.mkdir(f"{out}/frames")
ETH4 = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
ETH6 = b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd"
def cd(ch, data, pad=0):
    return struct.pack("!HH", ch, len(data)) + data + b"\0" * pad
def udp(payload, dport=3478):
    return struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
def v4(l4, ihl=5, frag=0x4000, proto=17):
    opts = b"\x01" * (4 * (ihl - 5))
    return ETH4 + struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(l4), 0, frag,
                              64, proto, 0, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])) + opts + l4
def v6(l4, nh=17):
    return ETH6 + struct.pack("!IHBB", 6 << 28, len(l4), nh, 64) + b"\xfd" + b"\0" * 14 + b"\x02" \
        + b"\xfd" + b"\0" * 14 + b"\x01" + l4
stun = struct.pack("!HHI", 1, 0, 0x2112A442) + b"\x01" * 12
frames = {
    "v4_channeldata": (v4(udp(cd(0x4000, b"hello"))), "channeldata_v4"),
    "v4_channeldata_padded": (v4(udp(cd(0x4FFF, b"hello", pad=3))), "channeldata_v4"),
    "v4_channeldata_empty": (v4(udp(cd(0x4001, b""))), "channeldata_v4"),
    "v6_channeldata": (v6(udp(cd(0x4000, b"hello"))), "channeldata_v6"),
    "v4_too_much_padding": (v4(udp(cd(0x4000, b"hello", pad=4))), "pass_bad_length"),
    "v6_length_past_payload": (v6(udp(cd(0x4000, b"hello")[:-1])), "pass_bad_length"),
    "v4_stun": (v4(udp(stun)), "pass_not_channeldata"),
    "v4_channel_0x5000": (v4(udp(cd(0x5000, b"x"))), "pass_not_channeldata"),
    "v4_short_payload": (v4(udp(b"\x40\x00")), "pass_not_channeldata"),
    "v4_other_port": (v4(udp(cd(0x4000, b"x"), dport=9)), "pass_other_port"),
    "v4_options": (v4(udp(cd(0x4000, b"hello")), ihl=6), "pass_not_udp"),
    "v4_first_fragment": (v4(udp(cd(0x4000, b"hello")), frag=0x2000), "pass_not_udp"),
    "v4_later_fragment": (v4(udp(cd(0x4000, b"hello")), frag=0x0010), "pass_not_udp"),
    "v4_tcp": (v4(b"\0" * 20, proto=6), "pass_not_udp"),
    "v4_udp_len_past_ip": (v4(udp(cd(0x4000, b"hello")))[:-1], "pass_not_udp"),
    "v6_hop_by_hop": (v6(b"\x11\x00" + b"\0" * 6 + udp(cd(0x4000, b"hello")), nh=0), "pass_not_udp"),
    "vlan_tagged": (b"\x02" * 6 + b"\x04" * 6 + b"\x81\x00\x00\x01\x08\x00" + v4(udp(cd(0x4000, b"x")))[14:], "pass_not_ip"),
    "arp": (b"\xff" * 6 + b"\x04" * 6 + b"\x08\x06" + b"\0" * 28, "pass_not_ip"),
    "v4_truncated_ip": (ETH4 + b"\x45\x00", "pass_not_ip"),
}
want = {}
for name, (frame, verdict) in frames.items():
    open(f"{out}/frames/{name}.bin", "wb").write(frame)
    want[verdict] = want.get(verdict, 0) + 1
want["seen"] = len(frames)
# No entries are written here: every well-formed ChannelData also goes up for
# want of one (ebpf/relay_test.sh writes entries and checks the relaying).
want["pass_no_entry"] = want.get("channeldata_v4", 0) + want.get("channeldata_v6", 0)
json.dump(want, open(f"{out}/expected.json", "w"))
PY

unshare -m sh -eu -c '
OUT=$1
mount -t bpf bpf /sys/fs/bpf
mkdir /sys/fs/bpf/m
bpftool prog load "$OUT/turnd_xdp.o" /sys/fs/bpf/p type xdp pinmaps /sys/fs/bpf/m
bpftool map update pinned /sys/fs/bpf/m/turnd_ports key 0x96 0x0d value 0x01
for f in "$OUT"/frames/*.bin; do
	r=$(bpftool prog run pinned /sys/fs/bpf/p data_in "$f" data_out "$f.out" | sed -n "s/^Return value: \([0-9]*\).*/\1/p")
	if [ "$r" != 2 ] || ! cmp -s "$f" "$f.out"; then
		echo "FAIL: $(basename "$f"): return $r (want 2, XDP_PASS) or the frame changed" >&2
		exit 1
	fi
done
bpftool -j map dump pinned /sys/fs/bpf/m/turnd_counters >"$OUT/counters.json"
' sh "$OUT"

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
names = ["seen", "pass_not_ip", "pass_not_udp", "pass_other_port",
         "pass_not_channeldata", "pass_bad_length", "channeldata_v4", "channeldata_v6",
         "relayed_to_peer", "relayed_to_client", "pass_no_entry", "pass_expired", "pass_fib",
         "pass_unsupported", "relayed_hairpin"]
def num(x):  # bpftool prints BTF-typed values as numbers, others as hex byte lists
    return x if isinstance(x, int) else int.from_bytes(bytes(int(b, 16) for b in x[:8]), "little")
dump = json.load(open(f"{out}/counters.json"))
got = {names[num(e["key"])]: sum(num(v["value"]["packets"] if isinstance(v["value"], dict)
                                     else v["value"]) for v in e["values"])
       for e in dump}
want = json.load(open(f"{out}/expected.json"))
for n in names:
    print(f"{n:22} {got.get(n, 0):3}  (want {want.get(n, 0)})")
bad = [n for n in names if got.get(n, 0) != want.get(n, 0)]
if bad:
    sys.exit(f"FAIL: {bad}")
print("OK: every frame got the expected verdict and came back unchanged")
PY
