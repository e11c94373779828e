#!/usr/bin/env bash
# Runs redis-benchmark and doozer-bench alternately (A B A B ...) on this
# machine and prints doozer's numbers as ratios to Redis's (medians over
# ROUNDS rounds), next to the performance targets. The machine is noisy: only the
# ratios measured in one run mean anything.
#
#   NODES=1 bench/compare-redis.sh        # one doozerd
#   NODES=3 ROUNDS=5 SECS=10 bench/compare-redis.sh
#
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server
# redis-tools) and python3; builds doozer in release mode.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
NODES=${NODES:-1}
cd "$(dirname "$0")/.."
cargo build --release -q
bin=./target/release
tmp=$(mktemp -d)
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

rport=$(free_port)
redis-server --port "$rport" --save "" --appendonly no > "$tmp/redis.log" 2>&1 &
"$bin/doozerd" -l 127.0.0.1:0 -w false --cal-slots "$NODES" --addr-file "$tmp/a1" > "$tmp/d1.log" 2>&1 &
wait_file "$tmp/a1"
uri="doozer:?ca=$(cat "$tmp/a1")"
for i in $(seq 2 "$NODES"); do
    "$bin/doozerd" -l 127.0.0.1:0 -w false -a "$(cat "$tmp/a1")" --addr-file "$tmp/a$i" > "$tmp/d$i.log" 2>&1 &
    wait_file "$tmp/a$i"
    uri="$uri&ca=$(cat "$tmp/a$i")"
done
for _ in $(seq 300); do
    voters=$("$bin/doozer" -a "$uri" members 2>/dev/null | grep -cE ' (leader|voter) ' || true)
    [ "$voters" -ge "$NODES" ] && break
    sleep 0.1
done
redis-cli -p "$rport" ping > /dev/null

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    redis-benchmark -p "$rport" -c 64 -d 100 -t set,get -n 400000 --csv > "$tmp/redis64-$round.csv"
    redis-benchmark -p "$rport" -c 1 -d 100 -t set -n 40000 --csv > "$tmp/redis1-$round.csv"
    "$bin/doozer-bench" -a "$uri" --workload put-seq,put-conc,get-conc --duration "$SECS" --warmup 1 \
        | grep '^{' > "$tmp/doozer-$round.json"
done

# The two targets that are not ratios, once, on the same cluster: watch
# latency with 100 watchers (writer paced at 200 writes/s) and memory per key.
echo "watch-fanout and mem" >&2
"$bin/doozer-bench" -a "$uri" --workload watch-fanout,mem --duration "$SECS" --warmup 1 \
    | grep '^{' > "$tmp/doozer-abs.json"

python3 - "$tmp" "$ROUNDS" "$NODES" <<'PY'
import csv, json, statistics, sys
tmp, rounds, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def redis(kind, round_, test, col):
    for row in csv.DictReader(open(f"{tmp}/redis{kind}-{round_}.csv")):
        if row["test"] == test:
            return float(row[col])
def doozer(round_, workload, key):
    for line in open(f"{tmp}/doozer-{round_}.json"):
        d = json.loads(line)
        if d["workload"] == workload:
            return float(d[key])
med = lambda xs: statistics.median(xs)
r = range(1, rounds + 1)
rset, rget = med([redis(64, i, "SET", "rps") for i in r]), med([redis(64, i, "GET", "rps") for i in r])
rp50 = med([redis(1, i, "SET", "p50_latency_ms") for i in r]) * 1000
dput, dget = med([doozer(i, "put-conc", "ops_per_sec") for i in r]), med([doozer(i, "get-conc", "ops_per_sec") for i in r])
dp50 = med([doozer(i, "put-seq", "latency_p50_us") for i in r])
put_target = "0.70" if nodes == 1 else "0.40"
print(f"{nodes} node(s), medians of {rounds} alternating rounds")
print(f"redis  SET c=64 {rset:10.0f}/s   GET c=64 {rget:10.0f}/s   SET c=1 p50 {rp50:6.0f}us")
print(f"doozer put-conc {dput:10.0f}/s   get-conc {dget:10.0f}/s   put-seq p50 {dp50:6.0f}us")
print(f"put-conc / redis SET   {dput / rset:5.2f}   (target >= {put_target})")
print(f"get-conc / redis GET   {dget / rget:5.2f}   (target >= 0.80)")
print(f"put-seq p50 / redis p50 {dp50 / rp50:5.2f}   (target <= 4, on 3 nodes)")
for line in open(f"{tmp}/doozer-abs.json"):
    d = json.loads(line)
    if d["workload"] == "watch-fanout":
        print(f"watch-fanout p99 from send {d['from_send_p99_us']:6.0f}us, missing {d['missing_events']}   (target <= 2000us, 0 missing, on 3 nodes)")
    if d["workload"] == "mem":
        per = {k: v for k, v in d.items() if k.startswith("rss_bytes_per_key")}
        print("mem bytes of RSS per key:", ", ".join(f"{v}" for v in per.values()), "  (target <= 250)")
PY
