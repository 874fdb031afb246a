#!/usr/bin/env bash
# Reruns the loader comparison of docs/xdp.md (aya vs libbpf-rs). Root; needs
# clang, libbpf-dev, bpftool, iproute2, python3, cargo (and, for libbpf-rs, a C
# compiler, libelf-dev, zlib1g-dev, pkg-config). Builds two scratch crates in
# a temporary directory (WORK= to keep them; the build times printed are from
# clean only without an existing WORK), then for each loader and mode:
# attaches in a namespace it creates, sends 7 ChannelData datagrams, checks
# the count, kills the loader with SIGKILL by PID while attached and reports
# whether the program is still on the interface. Bounded by timeouts; removes
# its namespaces.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
NS=()
cleanup() { for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done; }
trap cleanup EXIT

clang -target bpf -O2 -g -Wall -Werror -I"/usr/include/$(gcc -dumpmachine)" \
	-c "$HERE/../turnd_xdp.c" -o "$WORK/turnd_xdp.o"

build() { # crate-name dependency-spec source
	local d="$WORK/$1"
	[ -d "$d" ] || cargo new -q --vcs none "$d"
	(cd "$d" && cargo add -q "$2" anyhow && cp "$3" src/main.rs &&
		s=$(date +%s.%N) && cargo build -q &&
		printf '%s: build %.1f s, %s crates in its tree (normal+build), binary %s\n' "$1" \
			"$(echo "$(date +%s.%N) - $s" | bc)" \
			"$(cargo tree --prefix none -e normal,build | sed 's/ (.*//' | sort -u | grep -vc "^$1 \|^anyhow ")" \
			"$(du -h "target/debug/$1" | cut -f1)")
}
build l-aya aya@=0.14.0 "$HERE/aya.rs"
build l-libbpf-rs libbpf-rs@=0.27.2 "$HERE/libbpf-rs.rs"

trial() { # binary mode
	local R=lc-$$-$RANDOM C
	C=$R-c
	NS+=("$R" "$C")
	ip netns add "$R"
	ip netns add "$C"
	ip link add veth-r netns "$R" type veth peer name veth-c netns "$C"
	ip -n "$R" addr add 10.219.0.1/24 dev veth-r
	ip -n "$C" addr add 10.219.0.2/24 dev veth-c
	ip -n "$R" link set veth-r up
	ip -n "$C" link set veth-c up
	ip netns exec "$R" "$1" "$WORK/turnd_xdp.o" veth-r "$2" 2500 >"$WORK/out" 2>&1 &
	local P=$! mode seen after
	sleep 1
	mode=$(ip netns exec "$R" bpftool net show dev veth-r | awk '/^xdp/{getline; print $2}')
	ip netns exec "$C" timeout 10 python3 -c '
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(7): s.sendto(struct.pack("!HH", 0x4000, 3) + b"abc", ("10.219.0.1", 3478))'
	wait "$P" || true
	seen=$(awk '$1 == 6 {print $2}' "$WORK/out")
	ip netns exec "$R" "$1" "$WORK/turnd_xdp.o" veth-r "$2" 10000 >/dev/null 2>&1 &
	P=$!
	sleep 1
	kill -9 "$P"
	wait "$P" 2>/dev/null || true
	sleep 0.3
	after=detached
	ip netns exec "$R" bpftool net show dev veth-r | grep -q "^xdp" -A1 &&
		ip netns exec "$R" bpftool net show dev veth-r | grep -q "id " && after="STILL ATTACHED"
	printf '%-12s %-8s attached as %-8s counted %s/7 ChannelData; after kill -9: %s\n' \
		"$(basename "$1")" "$2" "${mode:-?}" "${seen:-?}" "$after"
}
for m in generic native; do trial "$WORK/l-aya/target/debug/l-aya" "$m"; done
for m in generic native link; do trial "$WORK/l-libbpf-rs/target/debug/l-libbpf-rs" "$m"; done
# The capability set turnd will ask for: CAP_BPF and CAP_NET_ADMIN, nothing
# else (no CAP_PERFMON, which the verifier wants for packet-pointer
# subtraction or variable packet-pointer arithmetic), as an unprivileged uid.
R=lc-$$-caps
NS+=("$R")
ip netns add "$R"
ip -n "$R" link add veth-a type veth peer name veth-b
ip -n "$R" link set veth-a up
caps=+bpf,+net_admin
if ip netns exec "$R" setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps=-all,$caps \
	--ambient-caps=-all,$caps --bounding-set=-all,$caps \
	timeout 10 "$WORK/l-aya/target/debug/l-aya" "$WORK/turnd_xdp.o" veth-a generic 10 >"$WORK/out" 2>&1; then
	echo "l-aya with only CAP_BPF and CAP_NET_ADMIN, uid 65534: loads and attaches"
else
	echo "l-aya with only CAP_BPF and CAP_NET_ADMIN, uid 65534: FAILS:"
	grep -E "^Error|prohibit" "$WORK/out" | head -3
fi
echo "scratch crates in $WORK"
