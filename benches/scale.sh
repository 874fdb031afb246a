#!/usr/bin/env bash
# Issue 5, scale: N concurrent allocations held by one turnd, with traffic on a sample.
#
# Starts a release turnd relaying on three loopback addresses (127.0.0.2–4, 16,384 ports each,
# so up to 49,152 relay ports), then one turnd-bench run that first opens N idle allocations
# (a permission each) and holds them while CLIENTS more allocations carry RATE datagrams/s of
# ChannelData for DURATION seconds; at the end every held allocation is refreshed — one that
# is gone or refused is an error, and the run fails. Prints the bench's table (setup rate,
# loss, RTT, server RSS and open files) and RSS per held allocation.
#
# All the clients come from 127.0.0.1, one source by the pre-authentication rate limit's measure,
# so the limit is off (--unauthenticated-rate 0).
#
# Every allocation is a socket in turnd and one in turnd-bench, so both need N + ~1,000 open
# files: the script raises the soft limit to the hard one and, when the hard limit is lower,
# holds as many as it allows and says so (raise it with `ulimit -Hn` as root, LimitNOFILE= in
# systemd, --ulimit nofile= in Docker).
#
# Knobs (environment): N (50000), CLIENTS (64), RATE (20000), DURATION (20), WORKERS (0 = one
# per core). A benchmark, not a test: nothing here asserts a time.
set -euo pipefail

N=${N:-50000}
CLIENTS=${CLIENTS:-64}
RATE=${RATE:-20000}
DURATION=${DURATION:-20}
WORKERS=${WORKERS:-0}
PORT=34791
USER=bench
PASS=bench-password

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --quiet --bin turnd --bin turnd-bench
TURND=$target/release/turnd
BENCH=$target/release/turnd-bench

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ]; then
    most=$((hard - CLIENTS * 2 - 1000))
    if [ "$N" -gt "$most" ]; then
        echo "scale.sh: the open-file hard limit here is $hard; holding $most allocations instead of $N"
        echo "          (each is a socket in turnd and one in turnd-bench; raise ulimit -Hn for more)"
        N=$most
    fi
fi

work=$(mktemp -d /tmp/turnd-scale.XXXXXX)
turnd_pid=""
cleanup() {
    if [ -n "$turnd_pid" ]; then
        kill "$turnd_pid" 2>/dev/null || true
        sleep 0.3
        kill "$turnd_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$turnd_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$turnd_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$TURND" --listen 127.0.0.1:$PORT --relay-ip 127.0.0.2 --relay-ip 127.0.0.3 --relay-ip 127.0.0.4 \
    --relay-ports 49152-65535 --user "$USER:$PASS" --realm bench --allow-peer 127.0.0.0/8 \
    --workers "$WORKERS" --metrics-listen 127.0.0.1:0 --log-level warn \
    --unauthenticated-rate 0 >"$work/turnd.log" 2>&1 &
turnd_pid=$!
for _ in $(seq 100); do
    ss -Hlun "sport = :$PORT" | grep -q . && break
    sleep 0.1
done
rss_kb() { awk '/^VmRSS:/ {print $2}' /proc/"$1"/status; }
rss0=$(rss_kb "$turnd_pid")

echo "turnd (pid $turnd_pid): holding $N allocations, $CLIENTS more carrying $RATE datagrams/s for ${DURATION}s"
"$BENCH" --server 127.0.0.1:$PORT --user $USER --password $PASS --server-pid "$turnd_pid" \
    --hold "$N" --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" | tee "$work/bench.txt"
held_rss=$(awk '$1 == "server_rss_kb" {print $2}' "$work/bench.txt")
awk -v n="$N" -v c="$CLIENTS" -v r0="$rss0" -v r1="$held_rss" \
    'BEGIN { printf "%-32s %14.3f\n", "server_rss_kb_per_allocation", (r1 - r0) / (n + c) }'
# The start-up warning that loopback relay addresses are not public is expected here.
if grep -E "WARN|ERROR" "$work/turnd.log" | grep -v "not publicly routable"; then
    echo "scale.sh: turnd logged warnings or errors (above)" >&2
    exit 1
fi
echo "scale.sh: done; logs in $work"
