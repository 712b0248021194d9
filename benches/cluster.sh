#!/usr/bin/env bash
# Cross-node fan-out latency in cluster mode: streams on node B, messages posted to node A,
# against everything on one node. Both nodes use one local redis-server (AOF, everysec).
#
#   benches/cluster.sh [RUNS] [STREAMS] [RATE] [MESSAGES]     defaults: 3 1000 50 1000
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; streams=${2:-1000}; rate=${3:-50}; messages=${4:-1000}
cargo build --release --quiet --bins
bin=$PWD/target/release
# The load tool is one client posting fast and holding thousands of streams: lift the
# per-client limits that exist for real clients.
unlimited="--send-rate 1000000000 --send-burst 1000000000 --max-streams-per-client 1000000 --max-streams 1000000 --max-connections-per-client 1000000"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir "$work" >/dev/null &
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
store="redis://127.0.0.1:$port/0"

start_node() { # NAME -> URL_NAME, PID_NAME
  "$bin/ssechat" --listen 127.0.0.1:0 --store "$store" --log warn $unlimited > "$work/$1.out" &
  printf -v "PID_$1" '%s' $!
  for _ in $(seq 100); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  printf -v "URL_$1" '%s' "$(sed -n 's/^listening on //p' "$work/$1.out")"
}
start_node a
start_node b

for i in $(seq "$runs"); do
  for mode in one-node two-nodes; do
    if [ "$mode" = one-node ]; then streams_url=$URL_a; pids=$PID_a; else streams_url=$URL_b; pids=$PID_a,$PID_b; fi
    "$bin/ssechat-load" fanout --json --url "$streams_url" --publish-url "$URL_a" --pid "$pids" \
        --streams "$streams" --messages "$messages" --rate "$rate" 2>&1 \
      | tee >(grep '^{' >> "$work/$mode.jsonl") | grep -v '^{' | sed "s/^/[$mode $i] /"
  done
done
python3 - "$work" <<'PY'
import json, statistics, sys
for mode in ["one-node", "two-nodes"]:
    runs = [json.loads(l) for l in open(f"{sys.argv[1]}/{mode}.jsonl")]
    med = lambda k: statistics.median(r[k] for r in runs)
    print(f"{mode}: {len(runs)} runs, median p50 {med('p50_ms'):.2f} ms, p99 {med('p99_ms'):.2f} ms, "
          f"deliveries/s {med('deliveries_per_second'):.0f}, lost {max(r['lost'] for r in runs)} (worst run)")
PY
