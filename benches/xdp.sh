#!/usr/bin/env bash
# Issue 18, measurement: CPU per relayed datagram of turnd with the XDP fast path against
# turnd in user space and the kernel floor (turnd-bench --null-server), and coturn when
# TURNSERVER names one, in the same namespace topology, interleaved, REPS repetitions each.
#
#   gen 10.79.0.2 ── veth ── 10.79.0.1 relay (the server under test)
#
# turnd-bench runs in `gen` (its clients and its echoing peers both on 10.79.0.2), the server
# in `relay` with forwarding on, static neighbour entries and the program on its veth; relayed
# datagrams leave the way they came (XDP_TX). XDP runs in softirq context, which no process's
# CPU time shows, so the figure is the whole machine's busy CPU from /proc/stat (user, nice,
# system, irq, softirq, steal) over the load, per relayed datagram (both directions). Beside it:
# the generator's own process CPU (getrusage of the child) per datagram, and the machine figure
# minus it — an approximation of "minus what the same generator costs against an idle target":
# the generator's softirq work (its sends and receives) is still in it, equally for every
# server, so differences between servers are exact and ratios are conservative.
#
# A benchmark, not a test: nothing asserts. Run it on a quiet machine (root; iproute2,
# python3; release binaries are built unless SERVER_BIN/BENCH_BIN name prebuilt ones).
#
# Knobs: REPS (5), RATE (50000 datagrams/s offered over all clients), CLIENTS (8),
# DURATION (5 s), SIZE (160), MODE (native | generic: the XDP attach mode, default native),
# TURNSERVER (a coturn turnserver binary to include), SERVER_BIN, BENCH_BIN.
set -euo pipefail

REPS=${REPS:-5}
RATE=${RATE:-50000}
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-5}
SIZE=${SIZE:-160}
MODE=${MODE:-native}
TURNSERVER=${TURNSERVER:-}
USER=bench
PASS=bench-password

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --quiet --features xdp --bin turnd --bin turnd-bench
fi
TURND=${SERVER_BIN:-$target/release/turnd}
BENCH=${BENCH_BIN:-$target/release/turnd-bench}
[ "$(id -u)" = 0 ] || { echo "xdp.sh: needs root (namespaces, XDP)" >&2; exit 1; }

GEN=turnd-xdpbench-gen-$$
RELAY=turnd-xdpbench-relay-$$
work=$(mktemp -d /tmp/turnd-xdpbench.XXXXXX)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    ip netns del "$GEN" 2>/dev/null || true
    ip netns del "$RELAY" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$GEN"
ip netns add "$RELAY"
ip -n "$RELAY" link add veth-r type veth peer name veth-g netns "$GEN"
ip -n "$RELAY" addr add 10.79.0.1/24 dev veth-r
ip -n "$GEN" addr add 10.79.0.2/24 dev veth-g
for n in "$GEN" "$RELAY"; do ip -n "$n" link set lo up; done
ip -n "$RELAY" link set veth-r up
ip -n "$GEN" link set veth-g up
ip netns exec "$RELAY" sysctl -qw net.ipv4.conf.all.forwarding=1
gen_mac=$(ip -n "$GEN" -j link show veth-g | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
ip -n "$RELAY" neigh replace 10.79.0.2 lladdr "$gen_mac" dev veth-r nud permanent
# Full UDP checksums from the generator (docs/xdp.md, checksum offload on veth), as from a
# real network: `ethtool -K veth-g tx off` through its ioctl. And native XDP_TX on a veth
# needs XDP on the other end: turnd-bench's side gets a pass-everything program by running a
# second turnd there with --xdp native.
ip netns exec "$GEN" python3 -c '
import fcntl, socket, struct, array
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
val = array.array("I", [0x17, 0])  # ETHTOOL_STXCSUM, off
ifr = struct.pack("16sP", b"veth-g", val.buffer_info()[0]) + b"\0" * 16
fcntl.ioctl(s.fileno(), 0x8946, ifr)'
receiver_pid=
if [ "$MODE" = native ]; then
    ip netns exec "$GEN" "$TURND" --listen 10.79.0.2:3479 --user a:b --xdp native \
        --metrics-listen 127.0.0.1:0 >"$work/receiver.log" 2>&1 &
    receiver_pid=$!
fi

start_server() { # name
    case $1 in
    xdp | user)
        local xdp=off
        [ "$1" = xdp ] && xdp=$MODE
        ip netns exec "$RELAY" "$TURND" --listen 10.79.0.1:3478 --user "$USER:$PASS" \
            --realm bench --allow-peer 10.79.0.0/24 --xdp "$xdp" --relay-ports 40000-49999 \
            >"$work/$1.log" 2>&1 &
        ;;
    floor)
        ip netns exec "$RELAY" "$BENCH" --user "$USER" --password "$PASS" --namespace-link \
            --null-server 10.79.0.1:3478 >"$work/floor.log" 2>&1 &
        ;;
    coturn)
        ip netns exec "$RELAY" "$TURNSERVER" -n --listening-ip 10.79.0.1 --listening-port 3478 \
            --relay-ip 10.79.0.1 --min-port 40000 --max-port 49999 --lt-cred-mech \
            --user "$USER:$PASS" --realm bench --allowed-peer-ip 10.79.0.0-10.79.0.255 \
            --no-cli --no-tls --no-dtls >"$work/coturn.log" 2>&1 &
        ;;
    esac
    server_pid=$!
    # Up once it answers a Binding (bounded: 100 tries, 100 ms each).
    ip netns exec "$GEN" python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1)
req = struct.pack("!HHI", 1, 0, 0x2112A442) + b"\7" * 12
for _ in range(100):
    s.sendto(req, ("10.79.0.1", 3478))
    try:
        s.recv(512); sys.exit(0)
    except OSError:
        pass
sys.exit("server did not answer")'
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# One load: machine CPU from /proc/stat and the generator's CPU around turnd-bench.
measure() { # name rep
    ip netns exec "$GEN" python3 - "$BENCH" "$1" "$2" "$RATE" "$CLIENTS" "$DURATION" "$SIZE" \
        "$USER" "$PASS" >>"$work/results.jsonl" <<'PY'
import json, resource, subprocess, sys
bench, name, rep, rate, clients, duration, size, user, pw = sys.argv[1:]
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
hz = 100  # USER_HZ
b0, r0 = busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
res = subprocess.run([bench, "--namespace-link", "--server", "10.79.0.1:3478",
                      "--client-ip", "10.79.0.2",
                      "--user", user, "--password", pw, "--clients", clients, "--rate", rate,
                      "--duration", duration, "--size", size, "--json"],
                     capture_output=True, text=True)
if res.returncode != 0:
    sys.exit(f"turnd-bench against {name} failed: {res.stderr}")
out = res.stdout
b1, r1 = busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
rep_ = json.loads(out.strip().splitlines()[-1])
relayed = (rep_.get("peer_received") or 0) + (rep_.get("client_received") or 0)
if not relayed:
    relayed = (rep_.get("relayed_both_directions_pps") or 0) * float(duration)
machine_us = (b1 - b0) * 1e6 / hz
gen_us = ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) * 1e6
if machine_us < gen_us:
    print(f"xdp.sh: /proc/stat moved less ({machine_us:.0f} us) than the generator's own CPU "
          f"({gen_us:.0f} us): this machine's /proc/stat does not show its load (a sandbox?); "
          "the machine figures are meaningless here", file=sys.stderr)
print(json.dumps({"server": name, "rep": int(rep), "relayed": relayed,
                  "loss_pct": rep_.get("loss_pct"),
                  "machine_us_per_dgram": machine_us / relayed if relayed else None,
                  "generator_us_per_dgram": gen_us / relayed if relayed else None,
                  "machine_minus_generator_us": (machine_us - gen_us) / relayed if relayed else None}))
PY
}

servers=(xdp user floor)
[ -n "$TURNSERVER" ] && servers+=(coturn)
echo "xdp.sh: $REPS repetitions of ${servers[*]}, $RATE/s offered, mode $MODE; results in $work" >&2
for rep in $(seq "$REPS"); do
    for s in "${servers[@]}"; do
        start_server "$s"
        measure "$s" "$rep"
        if [ "$s" = xdp ]; then
            # How much of it the kernel path carried (the rest: user space).
            ip netns exec "$RELAY" python3 -c '
import sys, urllib.request
m = urllib.request.urlopen("http://127.0.0.1:9641/metrics", timeout=5).read().decode()
def total(prefix):
    return sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines() if l.startswith(prefix))
k, a = total("turnd_xdp_relayed_datagrams_total"), total("turnd_relayed_datagrams_total{")
print(f"  xdp rep {sys.argv[1]}: {k:.0f} of {a:.0f} relayed datagrams in the kernel", file=sys.stderr)' "$rep"
        fi
        stop_server
    done
done
[ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true

python3 - "$work/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
servers = list(dict.fromkeys(r["server"] for r in rows))
keys = ["machine_us_per_dgram", "machine_minus_generator_us", "generator_us_per_dgram", "loss_pct"]
print(f"{'server':8} " + " ".join(f"{k:>34}" for k in keys))
med = {}
for s in servers:
    cells = []
    for k in keys:
        v = [r[k] for r in rows if r["server"] == s and r[k] is not None]
        if not v:
            cells.append(f"{'-':>34}")
            continue
        med[(s, k)] = statistics.median(v)
        cells.append(f"{statistics.median(v):>14.3f} ({min(v):.3f}–{max(v):.3f})".rjust(34))
    print(f"{s:8} " + " ".join(cells))
k = "machine_minus_generator_us"
if (("xdp", k) in med) and (("user", k) in med) and med[("xdp", k)] > 0:
    print(f"user / xdp (machine minus generator): {med[('user', k)] / med[('xdp', k)]:.2f}x "
          "(goal of issue 18: at least 5x)")
PY
