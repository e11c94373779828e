#!/usr/bin/env bash
# Durable doozerd (--data-dir) against etcd 3.4 on the same filesystem, with
# memory-only doozerd beside them: put-seq (one client) and put-conc (64
# clients), 100-byte values, distinct keys, all three clusters measured in
# turn within each round (A B C A B C ...); prints medians over ROUNDS.
# Every client load comes from doozer-bench (`--etcd` speaks etcd's gRPC), so
# the clients cost the same on both sides.
#
#   NODES=3 DIR=/dev/shm bench/compare-etcd.sh     # tmpfs
#   NODES=3 DIR=/var/tmp bench/compare-etcd.sh     # the machine's disk
#   NODES=1 ROUNDS=5 SECS=10 DIR=/var/tmp bench/compare-etcd.sh
#
# Needs etcd (Debian: apt-get install etcd-server etcd-client) and python3;
# builds doozer in release mode (CARGO_TARGET_DIR is honoured).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
NODES=${NODES:-3}
DIR=${DIR:-/var/tmp}
cd "$(dirname "$0")/.."
cargo build --release -q -p doozer -p doozer-bench
bin=${CARGO_TARGET_DIR:-./target}/release
tmp=$(mktemp -d)
data=$(mktemp -d "$DIR/doozer-vs-etcd.XXXXXX")
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp" "$data"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

# A doozerd cluster of NODES; $2 is extra flags per node (with %i for the
# node number). Sets $uri. Not called in $(...): the nodes must be this
# shell's jobs, for the clean-up to stop them.
doozer_cluster() {
    local name=$1 flags=$2
    uri=""
    for i in $(seq "$NODES"); do
        local attach=() extra=${flags//%i/$i}
        [ "$i" -gt 1 ] && attach=(-a "$(cat "$tmp/$name-1")")
        # shellcheck disable=SC2086
        "$bin/doozerd" -l 127.0.0.1:0 -w false --cal-slots "$NODES" "${attach[@]}" $extra \
            --addr-file "$tmp/$name-$i" > "$tmp/$name-$i.log" 2>&1 &
        wait_file "$tmp/$name-$i"
        uri="${uri:+$uri&}ca=$(head -1 "$tmp/$name-$i")"
    done
    for _ in $(seq 300); do
        voters=$("$bin/doozer" -a "doozer:?$uri" members 2>/dev/null | grep -cE ' (leader|voter) ' || true)
        [ "$voters" -ge "$NODES" ] && break
        sleep 0.1
    done
    uri="doozer:?$uri"
}

doozer_cluster durable "--data-dir $data/doozer-%i"
durable=$uri
doozer_cluster memory ""
memory=$uri

cluster="" endpoints=""
for i in $(seq "$NODES"); do
    cp[$i]=$(free_port); pp[$i]=$(free_port)
    cluster="${cluster:+$cluster,}e$i=http://127.0.0.1:${pp[$i]}"
    endpoints="${endpoints:+$endpoints,}127.0.0.1:${cp[$i]}"
done
for i in $(seq "$NODES"); do
    etcd --name "e$i" --data-dir "$data/etcd-$i" --logger zap --log-level warn \
        --listen-client-urls "http://127.0.0.1:${cp[$i]}" --advertise-client-urls "http://127.0.0.1:${cp[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${pp[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pp[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
        > "$tmp/etcd-$i.log" 2>&1 &
done
for _ in $(seq 300); do
    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health > /dev/null 2>&1 && break
    sleep 0.1
done

run() { "$bin/doozer-bench" "$@" --workload put-seq,put-conc --duration "$SECS" --warmup 1 | grep '^{'; }
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    run --etcd "$endpoints" > "$tmp/etcd-$round.json"
    run -a "$durable" > "$tmp/durable-$round.json"
    run -a "$memory" > "$tmp/memory-$round.json"
done

python3 - "$tmp" "$ROUNDS" "$NODES" "$DIR" <<'PY'
import json, statistics, sys
tmp, rounds, nodes, where = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def get(kind, round_, workload, key):
    for line in open(f"{tmp}/{kind}-{round_}.json"):
        d = json.loads(line)
        if d["workload"] == workload:
            return float(d[key])
med = lambda kind, w, k: statistics.median(get(kind, i, w, k) for i in range(1, rounds + 1))
print(f"{nodes} node(s), data on {where}, medians of {rounds} alternating rounds")
print(f"{'':22}{'put-conc/s':>12}{'put-seq p50':>13}{'put-seq p99':>13}")
for kind in ["etcd", "durable", "memory"]:
    name = {"etcd": "etcd 3.4", "durable": "doozerd --data-dir", "memory": "doozerd (memory)"}[kind]
    print(f"{name:22}{med(kind, 'put-conc', 'ops_per_sec'):>12.0f}"
          f"{med(kind, 'put-seq', 'latency_p50_us'):>11.0f}us{med(kind, 'put-seq', 'latency_p99_us'):>11.0f}us")
ratio = med("durable", "put-conc", "ops_per_sec") / med("etcd", "put-conc", "ops_per_sec")
p50 = med("durable", "put-seq", "latency_p50_us") / med("etcd", "put-seq", "latency_p50_us")
print(f"durable / etcd: put-conc {ratio:.2f}x (target >= 3), put-seq p50 {p50:.2f}x (target <= 1)")
PY
