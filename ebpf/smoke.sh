#!/usr/bin/env bash
# Step-1 smoke test of issue 18 (docs/xdp.md): builds ebpf/turnd_xdp.c with
# clang, attaches it in generic mode (or native: XDP_MODE=xdpdrv) to a veth
# inside a network namespace this script creates, sends a known mix of
# datagrams from a second namespace over IPv4 and IPv6, and checks the
# program's per-CPU counters with bpftool. Needs root, clang, libbpf-dev,
# bpftool, iproute2, python3. Always removes its namespaces (which detaches
# the program and frees its maps); bounded by `timeout`.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${XDP_MODE:-xdpgeneric}
OUT=$(mktemp -d)
R=turnd-xdp-relay-$$
C=turnd-xdp-client-$$

cleanup() {
	ip netns del "$R" 2>/dev/null || true
	ip netns del "$C" 2>/dev/null || true
	rm -rf "$OUT"
}
trap cleanup EXIT

clang -target bpf -O2 -g -Wall -Werror -I"/usr/include/$(gcc -dumpmachine)" \
	-c "$HERE/turnd_xdp.c" -o "$OUT/turnd_xdp.o"

ip netns add "$R"
ip netns add "$C"
ip link add veth-r netns "$R" type veth peer name veth-c netns "$C"
ip -n "$R" addr add 10.218.0.1/24 dev veth-r
ip -n "$C" addr add 10.218.0.2/24 dev veth-c
ip -n "$R" addr add fd18::1/64 dev veth-r nodad
ip -n "$C" addr add fd18::2/64 dev veth-c nodad
for ns in "$R" "$C"; do ip -n "$ns" link set lo up; done
ip -n "$R" link set veth-r up
ip -n "$C" link set veth-c up

ip -n "$R" link set dev veth-r "$MODE" obj "$OUT/turnd_xdp.o" sec xdp
PROG=$(ip -n "$R" -j -d link show dev veth-r | python3 -c '
import json, sys
x = json.load(sys.stdin)[0]["xdp"]
print(x.get("prog", x.get("attached", [{}])[0].get("prog", {}))["id"])')
echo "attached prog id $PROG in mode $MODE"

# The program's maps, by name, from the program's own map ids (names alone
# could match a leftover from another run).
map_id() {
	for m in $(bpftool -j prog show id "$PROG" | python3 -c '
import json, sys; print(" ".join(map(str, json.load(sys.stdin)["map_ids"])))'); do
		if [ "$(bpftool -j map show id "$m" | python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])')" = "$1" ]; then
			echo "$m"
			return
		fi
	done
	echo "map $1 not found" >&2
	exit 1
}
COUNTERS=$(map_id turnd_counters)
PORTS=$(map_id turnd_ports)

# Listen port 3478 (key in host byte order: little endian here).
bpftool map update id "$PORTS" key 0x96 0x0d value 0x01

ip netns exec "$C" timeout 20 python3 - <<'PY'
import socket, struct
def cd(channel, data, pad=False):
    body = data + (b"\0" * (-len(data) % 4) if pad else b"")
    return struct.pack("!HH", channel, len(data)) + body
stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + b"\x01" * 12
sends = (
    [cd(0x4000, b"x" * 5)] * 10 +          # ChannelData, unpadded
    [cd(0x4FFF, b"y" * 5, pad=True)] * 5 +  # ChannelData, padded (§12.5)
    [stun] * 3 +                            # STUN: user space
    [cd(0x4001, b"z" * 5)[:-2]] * 2 +       # length longer than payload
    [cd(0x3FFF, b"w" * 4)] * 2              # not a channel number
)
for fam, dst in ((socket.AF_INET, "10.218.0.1"), (socket.AF_INET6, "fd18::1")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    for p in sends:
        s.sendto(p, (dst, 3478))
    for _ in range(4):
        s.sendto(b"other", (dst, 9999))
    s.close()
PY
sleep 0.5

bpftool -j map dump id "$COUNTERS" >"$OUT/counters.json"
python3 - "$OUT/counters.json" <<'PY'
import json, sys
names = ["seen", "pass_not_ip", "pass_not_udp", "pass_other_port",
         "pass_not_channeldata", "pass_bad_length", "channeldata_v4", "channeldata_v6",
         "relayed_to_peer", "relayed_to_client", "pass_no_entry", "pass_expired", "pass_fib",
         "pass_unsupported", "relayed_hairpin"]
got = {}
for e in json.load(open(sys.argv[1])):
    key = e.get("key")
    key = int(key) if isinstance(key, int) else int.from_bytes(bytes(int(b, 16) for b in key), "little")
    vals = e.get("values", [])
    got[names[key]] = sum(v["value"]["packets"] if isinstance(v["value"], dict)
                          else int.from_bytes(bytes(int(b, 16) for b in v["value"][:8]), "little")
                          for v in vals)
for n in names:
    print(f"{n:22} {got.get(n, 0)}")
want = {"channeldata_v4": 15, "channeldata_v6": 15, "pass_bad_length": 4,
        "pass_not_channeldata": 10, "pass_other_port": 8, "pass_no_entry": 30}
bad = {k: (got.get(k, 0), v) for k, v in want.items() if got.get(k, 0) != v}
if bad:
    sys.exit(f"FAIL: counter (got, want): {bad}")
print("OK: toolchain builds, loads, attaches and counts")
PY
