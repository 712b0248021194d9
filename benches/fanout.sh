#!/usr/bin/env bash
# Fan-out benchmarks: the issue-4 targets, and the saturation comparison with nchan.
#
#   benches/fanout.sh latency [RUNS]      10k streams at 5 msg/s for 60 s; 1k streams at 200 msg/s for 30 s
#   benches/fanout.sh saturation [RUNS]   10k streams, 300 msgs at 100 msg/s: ssechat and nchan alternately
#   benches/fanout.sh soak [SECONDS]      19,900 streams held (default 300 s), then 10 messages
#
# STORE=memory runs the server with the memory store instead of SQLite.
#
# Every run starts a fresh server (so RSS "before" is a server with no streams), prints the
# load tool's report, and the script ends with the medians. Needs nginx + libnginx-mod-nchan
# for `saturation` (../shared/peers/nchan).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-latency}
cargo build --release --quiet --bins
bin=$PWD/target/release
# The load tool is one client posting fast and holding thousands of streams: lift the
# per-client limits that exist for real clients.
unlimited="--send-rate 1000000000 --send-burst 1000000000 --max-streams-per-client 1000000 --max-streams 1000000"
work=$(mktemp -d)
nchan_run=${NCHAN_RUN:-$PWD/../shared/peers/nchan/run.sh}
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start_ssechat() { # -> SERVER_URL, SERVER_PID
  rm -f "$work"/bench.db*
  "$bin/ssechat" --listen 127.0.0.1:0 --store "${STORE:-sqlite:$work/bench.db}" --log warn $unlimited > "$work/server.out" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.05; done
  SERVER_URL=$(sed -n 's/^listening on //p' "$work/server.out")
}
stop_ssechat() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }

fanout() { # LABEL ARGS...: one load-tool run, its JSON kept in $work/LABEL.jsonl
  local label=$1; shift
  "$bin/ssechat-load" fanout --json "$@" 2>&1 | tee >(grep '^{' >> "$work/$label.jsonl") | grep -v '^{' | sed "s/^/[$label] /"
}

summary() { # LABEL...: medians of the runs
  python3 - "$work" "$@" <<'PY'
import json, statistics, sys
work, labels = sys.argv[1], sys.argv[2:]
for label in labels:
    runs = [json.loads(l) for l in open(f"{work}/{label}.jsonl")]
    med = lambda k: statistics.median(r[k] for r in runs if r.get(k) is not None) if any(r.get(k) is not None for r in runs) else float("nan")
    print(f"{label}: {len(runs)} runs, median deliveries/s {med('deliveries_per_second'):.0f}, "
          f"p50 {med('p50_ms'):.1f} ms, p99 {med('p99_ms'):.1f} ms, max {med('max_ms'):.1f} ms, "
          f"lost {max(r['lost'] for r in runs)} (worst run), RSS/stream {med('rss_per_stream')/1024:.2f} KiB, "
          f"server CPU {med('cpu_seconds'):.1f} s")
PY
}

case "$mode" in
latency)
  runs=${2:-3}
  for i in $(seq "$runs"); do
    start_ssechat
    fanout 10k-5ps --url "$SERVER_URL" --pid "$SERVER_PID" --streams 10000 --messages 300 --rate 5
    stop_ssechat
    start_ssechat
    fanout 1k-200ps --url "$SERVER_URL" --pid "$SERVER_PID" --streams 1000 --messages 6000 --rate 200
    stop_ssechat
  done
  summary 10k-5ps 1k-200ps
  ;;
saturation)
  runs=${2:-3}
  for i in $(seq "$runs"); do
    start_ssechat
    fanout ssechat --url "$SERVER_URL" --pid "$SERVER_PID" --streams 10000 --messages 300 --rate 100 --drain 120s
    stop_ssechat
    out=$("$nchan_run" start 2 18081)
    pids=$(sed -n 's/^PIDS=//p' <<<"$out"); prefix=$(sed -n 's/^NCHAN_PREFIX=//p' <<<"$out")
    fanout nchan --target nchan --url http://127.0.0.1:18081 --pid "$pids" --streams 10000 --messages 300 --rate 100 --drain 120s
    "$nchan_run" stop "$prefix" >/dev/null
  done
  summary ssechat nchan
  python3 - "$work" <<'PY'
import json, statistics, sys
med = lambda label: statistics.median(json.loads(l)["deliveries_per_second"] for l in open(f"{sys.argv[1]}/{label}.jsonl"))
print(f"ssechat / nchan deliveries per second: {med('ssechat') / med('nchan'):.2f}")
PY
  ;;
soak)
  seconds=${2:-300}
  start_ssechat
  fanout soak --url "$SERVER_URL" --pid "$SERVER_PID" --streams 19900 --hold "${seconds}s" --messages 10 --rate 1
  stop_ssechat
  summary soak
  ;;
*) echo "usage: $0 latency|saturation|soak [RUNS|SECONDS]" >&2; exit 2 ;;
esac
