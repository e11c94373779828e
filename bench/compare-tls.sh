#!/usr/bin/env bash
# What TLS costs: put-seq, put-conc and get-conc on a NODES-node loopback
# cluster, plain and with full TLS (peer mutual TLS, client TLS and
# --client-ca, certificates from `doozer cert`), alternating (plain, TLS,
# plain, TLS ...) for ROUNDS rounds, a fresh cluster per run; prints the
# medians and the ratios. The machine is noisy: compare only within one run.
#
#     ROUNDS=3 SECS=5 NODES=3 bench/compare-tls.sh
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
NODES=${NODES:-3}
cd "$(dirname "$0")/.."
cargo build --release -q --bins
bin=$PWD/target/release
tmp=$(mktemp -d)
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

wait_file() { for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

pki=$tmp/pki
"$bin/doozer" cert ca "$pki" > /dev/null
for i in $(seq "$NODES"); do "$bin/doozer" cert node "$pki" "n$i" 127.0.0.1 > /dev/null; done
"$bin/doozer" cert client "$pki" bench > /dev/null

# run MODE ROUND: a fresh cluster, one doozer-bench run, the cluster stopped.
run() {
    local mode=$1 round=$2 dir=$tmp/$1-$2 uri="" tls=() bench_tls=()
    mkdir -p "$dir"
    for i in $(seq "$NODES"); do
        if [ "$mode" = tls ]; then
            tls=(-tlscert "$pki/n$i.pem" -tlskey "$pki/n$i-key.pem" --client-ca "$pki/ca.pem"
                 --peer-cert "$pki/n$i.pem" --peer-key "$pki/n$i-key.pem" --peer-ca "$pki/ca.pem")
        fi
        local attach=()
        [ "$i" -gt 1 ] && attach=(-a "$(head -1 "$dir/a1")")
        "$bin/doozerd" -l 127.0.0.1:0 -w false --cal-slots "$NODES" "${attach[@]}" "${tls[@]}" \
            --addr-file "$dir/a$i" 2> "$dir/d$i.log" &
        wait_file "$dir/a$i"
        uri="$uri&ca=$(head -1 "$dir/a$i")"
    done
    uri="doozer:?${uri#&}"
    [ "$mode" = tls ] && bench_tls=(--cacert "$pki/ca.pem" --cert "$pki/bench.pem" --key "$pki/bench-key.pem")
    local cli=(env -u DOOZER_CACERT -u DOOZER_CERT -u DOOZER_KEY)
    [ "$mode" = tls ] && cli=(env DOOZER_CACERT="$pki/ca.pem" DOOZER_CERT="$pki/bench.pem" DOOZER_KEY="$pki/bench-key.pem")
    for _ in $(seq 300); do
        voters=$("${cli[@]}" "$bin/doozer" -a "$uri" members 2>/dev/null | grep -cE ' (leader|voter) ' || true)
        [ "$voters" -ge "$NODES" ] && break
        sleep 0.1
    done
    "$bin/doozer-bench" -a "$uri" "${bench_tls[@]}" --workload put-seq,put-conc,get-conc --duration "$SECS" --warmup 1 \
        | grep '^{' > "$tmp/$mode-$round.json"
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    run plain "$round"
    run tls "$round"
done

python3 - "$tmp" "$ROUNDS" "$NODES" <<'PY'
import json, statistics, sys
tmp, rounds, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def value(mode, round_, workload, key):
    for line in open(f"{tmp}/{mode}-{round_}.json"):
        d = json.loads(line)
        if d["workload"] == workload:
            return float(d[key])
med = lambda mode, w, k: statistics.median(value(mode, i, w, k) for i in range(1, rounds + 1))
print(f"{nodes} node(s), medians of {rounds} alternating rounds (plain, TLS)")
for w, k, unit in [("put-conc", "ops_per_sec", "/s"), ("get-conc", "ops_per_sec", "/s"), ("put-seq", "latency_p50_us", "us p50")]:
    plain, tls = med("plain", w, k), med("tls", w, k)
    print(f"{w:9} plain {plain:10.0f}{unit:7} TLS {tls:10.0f}{unit:7} TLS/plain {tls / plain:5.2f}")
PY
