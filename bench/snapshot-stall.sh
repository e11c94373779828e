#!/bin/bash
# Usage: bench/snapshot-stall.sh [DIR-WITH-doozerd] (default target/release); doozer-bench comes from target/release.
# Uses ports 9246-9248 on 127.0.0.1. Results and the A/B: docs/performance.md.
# Stall of a node's runtime while a large snapshot is sent and installed:
# 3 nodes (binaries in $1), 300,000 keys of 100 B, a follower paused while
# 3 s of sequential writes move the log past it, then resumed: it catches up
# by a ~40 MB snapshot. Meanwhile 4 clients GET on the leader and 4 on the
# caught-up follower; their p999 and max latency show how long a runtime
# worker was held.
B=${1:-target/release}; B=$(cd "$B" && pwd); C=$(cd "$(dirname "$0")/../target/release" && pwd); D=$(mktemp -d); cd "$D"
$B/doozerd -l 127.0.0.1:9246 -w false 2> n0.log &
sleep 1
$B/doozerd -l 127.0.0.1:9247 -w false -a 127.0.0.1:9246 2> n1.log &
$B/doozerd -l 127.0.0.1:9248 -w false -a 127.0.0.1:9246 2> n2.log &
sleep 3
$C/doozer-bench -a 127.0.0.1:9246 --workload mem --mem-keys 300000 --duration 1 --warmup 0 > /dev/null 2>&1
F=$(pgrep -f "doozerd -l 127.0.0.1:9248")
kill -STOP $F
$C/doozer-bench -a 127.0.0.1:9246 --workload put-seq --duration 3 --warmup 0 > /dev/null 2>&1
( $C/doozer-bench -a 127.0.0.1:9246 --workload get-conc --clients 4 --keys 100 --duration 6 --warmup 0 2>&1 | grep '^{' | sed 's/^/leader   /' ) &
( sleep 0.5; kill -CONT $F; $C/doozer-bench -a 127.0.0.1:9248 --workload get-conc --clients 4 --keys 100 --duration 5 --warmup 0 2>&1 | grep '^{' | sed 's/^/follower /' ) &
wait %4 %5 2>/dev/null; sleep 7
pkill -f "doozerd -l 127.0.0.1:92"; sleep 0.5; rm -rf $D
