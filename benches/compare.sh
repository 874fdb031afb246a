#!/usr/bin/env bash
# Issue 5: turnd against coturn, in the same run, on loopback.
#
# Starts coturn (`turnserver`: $TURNSERVER, or the one on PATH, e.g. Debian's package coturn;
# the anchor is coturn 4.17 built from its public repository) and turnd side by side, each on its own
# port and relay port range, and runs against both, interleaved, REPS repetitions of:
#   (a) a fixed offered load of ChannelData over UDP         (turnd-bench --mode channel --rate)
#   (b) a fixed offered load of Send/Data indications        (turnd-bench --mode send --rate)
#   (c) a ChannelData flood from several clients             (turnd-bench --flood)
#   (d) allocation setup: SETUP allocations with a permission each, on a freshly started server,
#       one client after another, then (d') in bursts of SETUP_BURST clients side by side; both
#       also against turnd-bench's "null server" (the kernel work of a set-up and nothing else),
#       whose figure over coturn's is about the smallest ratio any server could reach here;
#       (a), (b) and (e) run against the null server too (it relays), for their kernel floor
#   (e) coturn's own turnutils_uclient as a second, independent generator (server CPU from /proc)
# and prints, per metric, the median and min–max for each server, the ratio turnd/coturn and
# the target of issue 5. Beside the CPU totals it prints the split: user and system µs and
# context switches ("wake-ups") per datagram or allocation, from /proc/PID/task/*/{stat,status},
# and the generator's own CPU (which bounds a flood on a small machine). A benchmark, not a
# test: nothing here asserts a time.
#
# Knobs (environment): TURNSERVER (the coturn binary to compare with; its version is printed),
# REPS (5), RATE (20000 datagrams/s offered in (a) and (b)), CLIENTS (4),
# FLOOD_CLIENTS (8), DURATION (3 s), SIZE (160 payload bytes), SETUP (1000), SETUP_BURST (100),
# UCLIENT_ARGS ("-n 2000 -m 10 -l 170 -z 1 -c"), SERVER_BIN / BENCH_BIN (prebuilt binaries:
# no build), BENCH_ARGS (extra turnd-bench flags for (a)–(c): "--batch 1 --no-gso" for the
# unbatched generator, "--no-gso" for sendmmsg bursts, "--echo-gso" for GSO echoes too).
set -euo pipefail

REPS=${REPS:-5}
RATE=${RATE:-20000}
CLIENTS=${CLIENTS:-4}
FLOOD_CLIENTS=${FLOOD_CLIENTS:-8}
DURATION=${DURATION:-3}
SIZE=${SIZE:-160}
SETUP=${SETUP:-1000}
SETUP_BURST=${SETUP_BURST:-100}
UCLIENT_ARGS=${UCLIENT_ARGS:-"-n 2000 -m 10 -l 170 -z 1 -c"}
BENCH_ARGS=${BENCH_ARGS:-}

# Fixed ports and relay ranges below the kernel's ephemeral range (32768-60999 by default), so
# no other process's outgoing socket can be holding one of them.
TURND_PORT=19781
COTURN_PORT=19782
NULL_PORT=19783
PEER_PORT=19790
USER=bench
PASS=bench-password
REALM=bench

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
TURNSERVER=${TURNSERVER:-turnserver}
# (e) uses the turnutils_uclient and turnutils_peer of the same coturn release as TURNSERVER when
# they sit beside it: Debian's 4.6.1 uclient gets 400 to its ChannelBind from coturn 4.17.1.
coturn_dir=$(dirname "$(command -v "$TURNSERVER" || echo /nonexistent/turnserver)")
UCLIENT=turnutils_uclient
TURN_PEER=turnutils_peer
[ -x "$coturn_dir/turnutils_uclient" ] && UCLIENT=$coturn_dir/turnutils_uclient
[ -x "$coturn_dir/turnutils_peer" ] && TURN_PEER=$coturn_dir/turnutils_peer
for tool in "$TURNSERVER" "$UCLIENT" "$TURN_PEER" python3; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is missing (apt-get install coturn python3)" >&2; exit 1; }
done
# SERVER_BIN=path runs that turnd binary instead of building this tree's (to compare builds).
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --quiet --bin turnd --bin turnd-bench
fi
TURND=${SERVER_BIN:-$target/release/turnd}
BENCH=${BENCH_BIN:-$target/release/turnd-bench}

# Which coturn this run measures (the figures mean nothing without it).
coturn_version=$("$TURNSERVER" --version 2>/dev/null | head -n 1)
echo "compare.sh: coturn $coturn_version ($(command -v "$TURNSERVER")), $("$TURND" --version) ($TURND)"

# SETUP allocations need a socket each in the tool and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d /tmp/turnd-compare.XXXXXX)
results=$work/results.jsonl
turnd_pid=""
coturn_pid=""
null_pid=""
peer_pid=""

stop() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    # turnd drains on the first SIGTERM; a second one makes it exit at once.
    sleep 0.3
    kill "$pid" 2>/dev/null || true
    # Bounded wait for the exit.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
    stop "$turnd_pid"
    stop "$coturn_pid"
    stop "$null_pid"
    stop "$peer_pid"
}
trap cleanup EXIT

wait_udp() { # Bounded wait until something listens on UDP port $1.
    for _ in $(seq 100); do
        ss -Hlun "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    echo "compare.sh: nothing listens on udp port $1" >&2
    return 1
}

start_turnd() {
    "$TURND" --listen 127.0.0.1:$TURND_PORT --relay-ports 20000-24999 \
        --user "$USER:$PASS" --realm "$REALM" --allow-peer 127.0.0.0/8 --allow-peer 127.0.0.1 \
        --metrics-listen 127.0.0.1:0 --log-level warn \
        --unauthenticated-rate 0 >>"$work/turnd.log" 2>&1 &  # every bench client is 127.0.0.1
    turnd_pid=$!
    wait_udp $TURND_PORT
}

start_coturn() {
    "$TURNSERVER" -n --listening-ip 127.0.0.1 --listening-port $COTURN_PORT --relay-ip 127.0.0.1 \
        --min-port 25000 --max-port 29999 --allow-loopback-peers --no-tls --no-dtls \
        --lt-cred-mech --user "$USER:$PASS" --realm "$REALM" --no-cli \
        --pidfile "$work/coturn.pid" --log-file "$work/coturn.log" --simple-log \
        >>"$work/coturn.out" 2>&1 &
    coturn_pid=$!
    wait_udp $COTURN_PORT
}

# target SERVER: sets port and pid of turnd, coturn or the null server.
target() {
    case $1 in
        turnd) port=$TURND_PORT pid=$turnd_pid ;;
        coturn) port=$COTURN_PORT pid=$coturn_pid ;;
        null) port=$NULL_PORT pid=$null_pid ;;
    esac
}

# bench SERVER SCENARIO ARGS...: one turnd-bench run, its JSON tagged and appended.
bench() {
    local server=$1 scenario=$2; shift 2
    local port pid
    target "$server"
    local out
    out=$("$BENCH" --server 127.0.0.1:$port --user $USER --password $PASS \
        --server-pid "$pid" --json "$@")
    echo "{\"server\":\"$server\",\"scenario\":\"$scenario\",\"m\":$out}" >>"$results"
}

cpu_ns() { # On-CPU nanoseconds of PID $1, summed over its threads (schedstat).
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'
}

# uclient SERVER: turnutils_uclient against a turnutils_peer echo; server CPU from /proc.
uclient() {
    local server=$1 port pid
    target "$server"
    local t0 t1 out sent recv
    t0=$(cpu_ns "$pid")
    # shellcheck disable=SC2086 # UCLIENT_ARGS is a list of flags.
    out=$(timeout 120 "$UCLIENT" $UCLIENT_ARGS -u $USER -w $PASS -e 127.0.0.1 \
        -r $PEER_PORT -p "$port" 127.0.0.1 2>&1) || true
    t1=$(cpu_ns "$pid")
    sent=$(grep 'start_mclient: tot_send_msgs=' <<<"$out" | tail -1 | sed 's/.*tot_send_msgs=\([0-9]*\).*/\1/' || true)
    recv=$(grep 'start_mclient: tot_send_msgs=' <<<"$out" | tail -1 | sed 's/.*tot_recv_msgs=\([0-9]*\).*/\1/' || true)
    echo "{\"server\":\"$server\",\"scenario\":\"uclient\",\"m\":{\"cpu_ns\":$((t1 - t0)),\"sent\":${sent:-0},\"recv\":${recv:-0}}}" >>"$results"
}

"$TURN_PEER" -L 127.0.0.1 -p $PEER_PORT >"$work/peer.log" 2>&1 &
peer_pid=$!
start_turnd
start_coturn
"$BENCH" --user $USER --password $PASS --null-server 127.0.0.1:$NULL_PORT >"$work/null.log" 2>&1 &
null_pid=$!
wait_udp $NULL_PORT
turnd_workers=$(nproc)
coturn_threads=$(ls "/proc/$coturn_pid/task" | wc -l)

echo "compare.sh: $REPS repetitions; results in $work" >&2
for rep in $(seq "$REPS"); do
    echo "  repetition $rep/$REPS" >&2
    for s in turnd coturn; do
        # shellcheck disable=SC2086 # BENCH_ARGS is a list of flags.
        bench $s chan_fixed --mode channel --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --size "$SIZE" $BENCH_ARGS
        # shellcheck disable=SC2086
        bench $s send_fixed --mode send --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --size "$SIZE" $BENCH_ARGS
        # shellcheck disable=SC2086
        bench $s flood --mode channel --clients "$FLOOD_CLIENTS" --flood --duration "$DURATION" --size "$SIZE" $BENCH_ARGS
        uclient $s
    done
    # The kernel floor of the fixed loads and of uclient's (the null server relays too).
    # shellcheck disable=SC2086
    bench null chan_fixed --mode channel --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --size "$SIZE" $BENCH_ARGS
    # shellcheck disable=SC2086
    bench null send_fixed --mode send --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --size "$SIZE" $BENCH_ARGS
    uclient null
    # (d) on freshly started servers, so RSS per allocation is not memory freed by a former run.
    stop "$turnd_pid"; stop "$coturn_pid"
    start_turnd; start_coturn
    for s in turnd coturn null; do bench $s setup --setup-only "$SETUP"; done
    for s in turnd coturn null; do
        bench $s setup_burst --setup-only "$SETUP" --setup-concurrency "$SETUP_BURST"
    done
done

echo
echo "machine: $(nproc) cores, $(uname -sr); turnd workers: $turnd_workers (one per core);" \
    "coturn threads: $coturn_threads (its default relay threads plus its own)"
echo "load: (a)(b) $RATE datagrams/s offered by $CLIENTS clients, $SIZE-byte payloads, ${DURATION}s;" \
    "(c) flood by $FLOOD_CLIENTS clients; (d) $SETUP allocations; (e) turnutils_uclient $UCLIENT_ARGS;" \
    "turnd-bench extra flags: ${BENCH_ARGS:-none}"
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def vals(server, scenario, key):
    out = []
    for r in rows:
        if r["server"] == server and r["scenario"] == scenario:
            m = r["m"]
            v = key(m) if callable(key) else m.get(key)
            if v is not None:
                out.append(v)
    return out
def uclient_cpu(m):
    n = m["sent"] + m["recv"]
    return m["cpu_ns"] / 1e3 / n if n else None
metrics = [
    ("(a) CPU us/datagram, ChannelData fixed load", "chan_fixed", "server_cpu_us_per_datagram", "<= 0.6x"),
    ("(a) user us/datagram", "chan_fixed", "server_user_us_per_datagram", ""),
    ("(a) system us/datagram", "chan_fixed", "server_sys_us_per_datagram", ""),
    ("(a) wake-ups (context switches)/datagram", "chan_fixed", "server_wakeups_per_datagram", ""),
    ("(a) generator CPU us/datagram", "chan_fixed", "generator_cpu_us_per_datagram", ""),
    ("(a) loss %, ChannelData fixed load", "chan_fixed", "loss_pct", ""),
    ("(a) RTT p50 us, ChannelData", "chan_fixed", "rtt_p50_us", ""),
    ("(a) RTT p99 us, ChannelData", "chan_fixed", "rtt_p99_us", ""),
    ("(b) CPU us/datagram, Send/Data fixed load", "send_fixed", "server_cpu_us_per_datagram", "<= 0.6x"),
    ("(b) user us/datagram", "send_fixed", "server_user_us_per_datagram", ""),
    ("(b) system us/datagram", "send_fixed", "server_sys_us_per_datagram", ""),
    ("(b) wake-ups (context switches)/datagram", "send_fixed", "server_wakeups_per_datagram", ""),
    ("(b) loss %, Send/Data fixed load", "send_fixed", "loss_pct", ""),
    ("(b) RTT p50 us, Send/Data", "send_fixed", "rtt_p50_us", ""),
    ("(c) flood relayed datagrams/s (both dirs)", "flood", "relayed_both_directions_pps", ">= 1.5x"),
    ("(c) flood CPU us/datagram", "flood", "server_cpu_us_per_datagram", ""),
    ("(c) flood user us/datagram", "flood", "server_user_us_per_datagram", ""),
    ("(c) flood system us/datagram", "flood", "server_sys_us_per_datagram", ""),
    ("(c) flood wake-ups/datagram", "flood", "server_wakeups_per_datagram", ""),
    ("(c) flood generator CPU us/datagram", "flood", "generator_cpu_us_per_datagram", ""),
    ("(c) flood generator CPU % of one core", "flood", "generator_cpu_pct", ""),
    ("(c) flood RTT p50 us", "flood", "rtt_p50_us", ""),
    ("(d) CPU us per allocation setup", "setup", "server_cpu_us_per_allocation", "<= 0.1x"),
    ("(d) user us per allocation", "setup", "server_user_us_per_allocation", ""),
    ("(d) system us per allocation", "setup", "server_sys_us_per_allocation", ""),
    ("(d) wake-ups per allocation", "setup", "server_wakeups_per_allocation", ""),
    ("(d) RSS KB per allocation", "setup", "server_rss_kb_per_allocation", "<= 0.2x"),
    ("(d) allocations set up per s", "setup", "setup_per_s", ""),
    ("(d') burst: CPU us per allocation setup", "setup_burst", "server_cpu_us_per_allocation", "<= 0.1x"),
    ("(d') burst: wake-ups per allocation", "setup_burst", "server_wakeups_per_allocation", ""),
    ("(d') burst: allocations set up per s", "setup_burst", "setup_per_s", ""),
    ("(e) uclient: CPU us/datagram", "uclient", uclient_cpu, "<= 0.6x"),
    ("(e) uclient: datagrams relayed", "uclient", lambda m: m["sent"] + m["recv"], ""),
]
def cell(v):
    if not v:
        return "-"
    f = lambda x: f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return f"{f(statistics.median(v))} [{f(min(v))}-{f(max(v))}]"
print(f"{'metric':<44} {'turnd median [min-max]':<26} {'coturn median [min-max]':<26} {'ratio':>6}  target")
for name, sc, key, target in metrics:
    t, c = vals("turnd", sc, key), vals("coturn", sc, key)
    ratio = "-"
    if t and c and statistics.median(c):
        ratio = f"{statistics.median(t) / statistics.median(c):.2f}"
    print(f"{name:<44} {cell(t):<26} {cell(c):<26} {ratio:>6}  {target}")
print()
print("kernel floor (turnd-bench --null-server: the same datagrams, relay sockets and epoll registrations,")
print("no protocol work, one recvmmsg per readable socket and one sendto per datagram out). For set-up,")
print("floor/coturn is about the smallest ratio any server could reach here; for relaying, a server that batches")
print("its sends (turnd does) can go somewhat below the floor:")
print(f"{'scenario':<44} {'floor median [min-max]':<26} {'floor/coturn':>12} {'turnd/floor':>12}")
floors = [
    ("(a) CPU us/datagram, ChannelData fixed load", "chan_fixed", "server_cpu_us_per_datagram"),
    ("(b) CPU us/datagram, Send/Data fixed load", "send_fixed", "server_cpu_us_per_datagram"),
    ("(d) CPU us/allocation, one after another", "setup", "server_cpu_us_per_allocation"),
    ("(d') CPU us/allocation, bursts", "setup_burst", "server_cpu_us_per_allocation"),
    ("(e) uclient: CPU us/datagram", "uclient", uclient_cpu),
]
for name, sc, key in floors:
    n, c, t = vals("null", sc, key), vals("coturn", sc, key), vals("turnd", sc, key)
    fc = f"{statistics.median(n) / statistics.median(c):.2f}" if n and c else "-"
    tf = f"{statistics.median(t) / statistics.median(n):.2f}" if n and t else "-"
    print(f"{name:<44} {cell(n):<26} {fc:>12} {tf:>12}")
PY
