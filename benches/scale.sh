#!/usr/bin/env bash
# Issue 5, scale: N concurrent allocations held by turnd, with traffic on a sample.
#
# Starts INSTANCES release turnd processes (default 1) and splits N among them. Instance i
# (0-based) listens on 127.0.0.1:PORT+i and relays on 127.0.i.2, 127.0.i.3, 127.0.i.4 (16,384
# ports each, so up to 49,152 relay ports; more addresses, 127.0.i.5…, when its share needs
# them with 10 % headroom), and has a turnd-bench of its own whose clients and peers use
# 127.0.i.1. Each bench first opens its share of the N idle allocations (a permission each)
# and holds them while CLIENTS more allocations carry RATE datagrams/s of ChannelData for
# DURATION seconds; at the end every held allocation is refreshed — one that is gone or
# refused is an error, and the run fails. All the instances run at once, and the script
# samples every turnd's turnd_allocations_active gauge twice a second to report how many
# were held at the same time. It prints each bench's table, then one row per instance and a
# total: allocations held, set-up rate, errors, server RSS and open files, RSS per held
# allocation, and the traffic.
#
# With INSTANCES=1 this is one turnd on 127.0.0.1:PORT relaying on 127.0.0.2–4, as before
# (and a fourth address above ~44,600 allocations).
# Several instances are how one box holds more allocations than one process's open-file
# limit allows (docs/scaling.md, on one host).
#
# All the clients of an instance come from one address, one source by the pre-authentication
# rate limit's measure, so the limit is off (--unauthenticated-rate 0).
#
# Every allocation is a socket in its turnd and one in its turnd-bench, so each needs its
# share of N + ~1,000 open files: the script raises the soft limit to the hard one and, when
# the hard limit is lower, holds as many as it allows and says so (raise it with `ulimit -Hn`
# as root, LimitNOFILE= in systemd, --ulimit nofile= in Docker, or use more INSTANCES). Each
# bench's sockets also need ephemeral ports on its one address
# (net.ipv4.ip_local_port_range): a share that does not fit fails before anything starts.
#
# Knobs (environment): N (50000), INSTANCES (1), CLIENTS (64 per instance), RATE (20000
# datagrams/s per instance), DURATION (20), WORKERS (0 = one per core, per instance). A
# benchmark, not a test: nothing here asserts a time.
set -euo pipefail

N=${N:-50000}
INSTANCES=${INSTANCES:-1}
CLIENTS=${CLIENTS:-64}
RATE=${RATE:-20000}
DURATION=${DURATION:-20}
WORKERS=${WORKERS:-0}
PORT=34791
USER=bench
PASS=bench-password
# Relay ports per relay address (--relay-ports below).
RELAY_LOW=49152
RELAY_HIGH=65535

if ! [[ "$INSTANCES" =~ ^[0-9]+$ ]] || [ "$INSTANCES" -lt 1 ] || [ "$INSTANCES" -gt 64 ]; then
    echo "scale.sh: INSTANCES must be 1–64" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --quiet --bin turnd --bin turnd-bench
TURND=$target/release/turnd
BENCH=$target/release/turnd-bench

# Each instance's share of N, the first ones taking the remainder.
share=()
for ((i = 0; i < INSTANCES; i++)); do
    share+=($((N / INSTANCES + (i < N % INSTANCES ? 1 : 0))))
done

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ]; then
    most=$((hard - CLIENTS * 2 - 1000))
    if [ "${share[0]}" -gt "$most" ]; then
        echo "scale.sh: the open-file hard limit here is $hard; each process holds $most allocations instead of ${share[0]}"
        echo "          (each is a socket in turnd and one in turnd-bench; raise ulimit -Hn or INSTANCES for more)"
        for ((i = 0; i < INSTANCES; i++)); do
            [ "${share[i]}" -gt "$most" ] && share[i]=$most
        done
        N=0
        for s in "${share[@]}"; do N=$((N + s)); done
    fi
fi
read -r eph_low eph_high </proc/sys/net/ipv4/ip_local_port_range
eph=$((eph_high - eph_low + 1))
if [ $((share[0] + CLIENTS * 2 + 100)) -gt "$eph" ]; then
    echo "scale.sh: ${share[0]} allocations from one client address need more than its $eph ephemeral ports" >&2
    echo "          (net.ipv4.ip_local_port_range); use more INSTANCES" >&2
    exit 2
fi

work=$(mktemp -d /tmp/turnd-scale.XXXXXX)
turnd_pids=()
bench_pids=()
sampler_pid=""
stop_pid() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    [ -n "$sampler_pid" ] && stop_pid "$sampler_pid"
    for p in "${bench_pids[@]}" "${turnd_pids[@]}"; do stop_pid "$p"; done
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' /proc/"$1"/status; }
# The metrics address turnd bound (it asks for port 0), from its "turnd metrics http://" line.
metrics_addr() { sed -n 's|^turnd metrics http://||p' "$work/turnd$1.log" | head -1; }

rss0=()
metrics=()
for ((i = 0; i < INSTANCES; i++)); do
    port=$((PORT + i))
    # Enough relay addresses for the share at 16,384 ports each, with 10 % headroom (each
    # worker spreads allocations over them in turn, moving on when one is full). Never fewer
    # than the three of the single-instance run.
    ports=$((RELAY_HIGH - RELAY_LOW + 1))
    nips=$((((share[i] + CLIENTS) * 11 / 10 + ports - 1) / ports))
    [ "$nips" -lt 3 ] && nips=3
    relay_args=()
    for ((j = 0; j < nips; j++)); do relay_args+=(--relay-ip "127.0.$i.$((j + 2))"); done
    "$TURND" --listen 127.0.0.1:$port "${relay_args[@]}" \
        --relay-ports $RELAY_LOW-$RELAY_HIGH --user "$USER:$PASS" --realm bench \
        --allow-peer 127.0.0.0/8 --allow-peer 127.0.0.1 --workers "$WORKERS" --metrics-listen 127.0.0.1:0 \
        --log-level warn --unauthenticated-rate 0 >"$work/turnd$i.log" 2>&1 &
    turnd_pids+=($!)
done
for ((i = 0; i < INSTANCES; i++)); do
    pid=${turnd_pids[i]}
    for _ in $(seq 100); do
        ss -Hlun "sport = :$((PORT + i))" | grep -q . && [ -n "$(metrics_addr "$i")" ] && break
        kill -0 "$pid" 2>/dev/null || { echo "scale.sh: turnd $i exited:" >&2; cat "$work/turnd$i.log" >&2; exit 1; }
        sleep 0.1
    done
    rss0+=("$(rss_kb "$pid")")
    metrics+=("$(metrics_addr "$i")")
done

# Allocations active in all instances at once, twice a second, for at most an hour.
sample_active() {
    for _ in $(seq 7200); do
        total=0
        for m in "$@"; do
            n=$(curl -s --max-time 2 "http://$m/metrics" |
                awk '/^turnd_allocations_active[{ ]/ { s += $NF } END { print s + 0 }') || n=0
            total=$((total + n))
        done
        echo "$total"
        sleep 0.5
    done
}
if [ -n "${metrics[0]}" ]; then
    sample_active "${metrics[@]}" >"$work/active.txt" &
    sampler_pid=$!
fi

for ((i = 0; i < INSTANCES; i++)); do
    echo "turnd $i (pid ${turnd_pids[i]}, 127.0.0.1:$((PORT + i))): holding ${share[i]} allocations, $CLIENTS more carrying $RATE datagrams/s for ${DURATION}s"
    # The bench's own loops are bounded; timeout bounds the whole run on top.
    timeout $((DURATION + 900)) "$BENCH" --server 127.0.0.1:$((PORT + i)) --client-ip "127.0.$i.1" \
        --user $USER --password $PASS --server-pid "${turnd_pids[i]}" --hold "${share[i]}" \
        --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" >"$work/bench$i.txt" 2>&1 &
    bench_pids+=($!)
done
failed=0
for ((i = 0; i < INSTANCES; i++)); do
    if ! wait "${bench_pids[i]}"; then
        echo "scale.sh: turnd-bench $i failed" >&2
        failed=1
    fi
done
bench_pids=()
if [ -n "$sampler_pid" ]; then
    stop_pid "$sampler_pid"
    sampler_pid=""
fi

for ((i = 0; i < INSTANCES; i++)); do
    echo "--- instance $i: turnd-bench"
    cat "$work/bench$i.txt"
done
field() { awk -v k="$2" '$1 == k {print $2}' "$work/bench$1.txt"; }
# One line per instance, every figure a number ("-" when the bench printed none).
: >"$work/rows.txt"
for ((i = 0; i < INSTANCES; i++)); do
    if [ -z "$(field $i held_allocations)" ] || [ -z "$(field $i server_rss_kb)" ]; then
        echo "scale.sh: no figures from turnd-bench $i (see above)" >&2
        failed=1
        continue
    fi
    echo "$i ${rss0[i]} $(for k in held_allocations held_setup_per_s held_errors server_rss_kb \
        server_open_fds offered_pps relayed_both_directions_pps loss_pct rtt_p50_us rtt_p99_us; do
        printf '%s ' "$(field $i $k)"; done)" >>"$work/rows.txt"
done
echo "--- summary: per instance and in total (traffic: CLIENTS allocations per instance)"
awk -v c="$CLIENTS" '
    BEGIN { printf "%-8s %8s %11s %6s %8s %8s %10s %11s %11s %8s %10s %10s\n", "instance",
        "held", "setup_per_s", "errors", "rss_mb", "open_fds", "rss_kb_per", "offered_pps",
        "relayed_pps", "loss_pct", "rtt_p50_us", "rtt_p99_us" }
    { printf "%-8s %8d %11.0f %6d %8.1f %8d %10.3f %11.0f %11.0f %8.2f %10s %10s\n", $1, $3, $4,
        $5, $6 / 1024, $7, ($6 - $2) / ($3 + c), $8, $9, $10, $11, $12
      held += $3; setup += $4; err += $5; rss += $6; grow += $6 - $2; fds += $7; off += $8
      rel += $9; k++ }
    END { if (k) printf "%-8s %8d %11.0f %6d %8.1f %8d %10.3f %11.0f %11.0f\n", "total", held,
        setup, err, rss / 1024, fds, grow / (held + c * k), off, rel }' "$work/rows.txt"
t_held=$(awk '{ s += $3 } END { print s + 0 }' "$work/rows.txt")
t_err=$(awk '{ s += $5 } END { print s + 0 }' "$work/rows.txt")
if [ -s "$work/active.txt" ]; then
    peak=$(sort -n "$work/active.txt" | tail -1)
    echo "peak allocations active at once, all instances (turnd_allocations_active): $peak" \
        "(held + traffic clients: $((t_held + CLIENTS * INSTANCES)))"
    if [ "$peak" -lt "$t_held" ]; then
        echo "scale.sh: the held allocations were never all active at once (the instances did not overlap)" >&2
        failed=1
    fi
else
    echo "scale.sh: no sample of turnd_allocations_active (metrics unreachable)" >&2
    failed=1
fi
for ((i = 0; i < INSTANCES; i++)); do
    # The start-up warning that loopback relay addresses are not public is expected here.
    if grep -E "WARN|ERROR" "$work/turnd$i.log" | grep -v "not publicly routable"; then
        echo "scale.sh: turnd $i logged warnings or errors (above)" >&2
        failed=1
    fi
done
[ "$t_err" -eq 0 ] || failed=1
if [ "$failed" -ne 0 ]; then
    echo "scale.sh: FAILED; logs in $work" >&2
    exit 1
fi
echo "scale.sh: done; logs in $work"
