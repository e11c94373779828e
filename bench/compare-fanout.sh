#!/usr/bin/env bash
# Watch fan-out of two doozerd builds, A/B: `doozer-bench watch-fanout` for
# each watcher count in WATCHERS, with WAIT loops and with streams, on a
# fresh NODES-node loopback cluster per run, builds alternating (A, B, A,
# B ...) for ROUNDS rounds; prints the medians of p99 from send, the
# writer's rate and the CPU of the bench (the watchers) and of the servers.
# The same doozer-bench (this tree's) drives both builds. NONVOTERS=4 adds
# that many members without a /ctl/cal slot (non-voters: they serve reads
# and watches), and the watchers spread over all members.
#
#     A=/tmp/old B=target/release ROUNDS=3 NODES=3 WATCHERS=100,1000 bench/compare-fanout.sh
#
# Without A, only B runs (this tree's build): the scaling runs themselves.
# OUT=DIR keeps every run's JSON lines (each node's CPU is there).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
NODES=${NODES:-3}
RATE=${RATE:-200}
WATCHERS=${WATCHERS:-100,1000}
MODES=${MODES:-wait stream}
NONVOTERS=${NONVOTERS:-0}
cd "$(dirname "$0")/.."
cargo build --release -q --bins
B=${B:-$PWD/target/release}
builds=(B)
[ -n "${A:-}" ] && builds=(A B)
bench=$PWD/target/release/doozer-bench
tmp=$(mktemp -d)
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$tmp"/*.json "$OUT"/ 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

wait_file() { for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

# run BUILD MODE ROUND: a fresh cluster, one doozer-bench run, the cluster stopped.
run() {
    local build=$1 mode=$2 round=$3 dir=$tmp/$1-$2-$3 uri="" bin
    bin=${!build}
    mkdir -p "$dir"
    for i in $(seq $((NODES + NONVOTERS))); do
        local attach=()
        [ "$i" -gt 1 ] && attach=(-a "$(head -1 "$dir/a1")")
        "$bin/doozerd" -l 127.0.0.1:0 -w false --cal-slots "$NODES" "${attach[@]}" \
            --addr-file "$dir/a$i" 2> "$dir/d$i.log" &
        wait_file "$dir/a$i"
        uri="$uri&ca=$(head -1 "$dir/a$i")"
    done
    uri="doozer:?${uri#&}"
    for _ in $(seq 300); do
        voters=$("$bin/doozer" -a "$uri" members 2>/dev/null | grep -cE ' (leader|voter) ' || true)
        [ "$voters" -ge "$NODES" ] && break
        sleep 0.1
    done
    local stream=()
    [ "$mode" = stream ] && stream=(--stream)
    "$bench" -a "$uri" --workload watch-fanout --watchers "$WATCHERS" "${stream[@]}" --fanout-rate "$RATE" \
        --duration "$SECS" --warmup 2 | grep '^{' > "$tmp/$build-$mode-$round.json"
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        for build in "${builds[@]}"; do
            echo "round $round/$ROUNDS: $build $mode" >&2
            run "$build" "$mode" "$round"
        done
    done
done

python3 - "$tmp" "$ROUNDS" "$NODES" "$RATE" "$MODES" "$NONVOTERS" "${builds[@]}" <<'PY'
import json, statistics, sys
tmp, rounds, nodes, rate, modes, nonvoters, builds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].split(), sys.argv[6], sys.argv[7:]
runs = {}
for b in builds:
    for m in modes:
        for r in range(1, rounds + 1):
            for line in open(f"{tmp}/{b}-{m}-{r}.json"):
                d = json.loads(line)
                runs.setdefault((b, m, int(d["watchers"])), []).append(d)
def med(ds, key):
    return statistics.median(float(d[key]) for d in ds)
def servers(d):
    return sum(float(v) for k, v in d.items() if k.startswith("server_cpu_pct[") and v != "n/a")
print(f"{nodes} voter(s) + {nonvoters} non-voter(s), {rate} writes/s, medians of {rounds} rounds (builds alternating: {', '.join(builds)})")
print(f"{'build':5} {'watch':6} {'watchers':>8} {'p99 send ms':>11} {'p50 ms':>7} {'writes/s':>8} {'missing':>7} {'bench cpu%':>10} {'servers cpu%':>12}")
for (b, m, w), ds in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
    print(f"{b:5} {m:6} {w:8} {med(ds, 'from_send_p99_us') / 1000:11.2f} {med(ds, 'from_send_p50_us') / 1000:7.2f} "
          f"{med(ds, 'ops_per_sec'):8.0f} {max(int(d['missing_events']) for d in ds):7} {med(ds, 'bench_cpu_pct'):10.0f} "
          f"{statistics.median(servers(d) for d in ds):12.0f}")
PY
