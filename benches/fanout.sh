#!/usr/bin/env bash
# Fan-out benchmarks: the issue-4 targets, and the saturation comparison with nchan.
#
#   benches/fanout.sh latency [RUNS]      10k streams at 5 msg/s for 60 s; 1k streams at 100 msg/s
#                                         and at 200 msg/s, 30 s each
#   benches/fanout.sh saturation [RUNS]   10k streams, 300 msgs at 100 msg/s: ssechat and nchan alternately
#   benches/fanout.sh soak [SECONDS]      19,900 streams held (default 300 s), then 10 messages
#   benches/fanout.sh rss [RUNS]          idle server RSS per stream, 3,000 streams, fresh and warm
#
# STORE=memory runs the server with the memory store instead of SQLite.
# WARM=1 opens every stream the way a browser does (the load tool's --warm: GET /rooms/{room},
# then the stream on the same keep-alive connection); WARM=both runs each case fresh and then
# warm, back to back, and prints their medians side by side. Labels end in -fresh or -warm.
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
unlimited="--send-rate 1000000000 --send-burst 1000000000 --max-streams-per-client 1000000 --max-streams 1000000 --max-connections-per-client 1000000"
work=$(mktemp -d)
nchan_run=${NCHAN_RUN:-$PWD/../shared/peers/nchan/run.sh}
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start_ssechat() { # -> SERVER_URL, SERVER_PID
  # The old output goes first: the new server truncates it only once it has started, and
  # until then the wait below would find the previous server's "listening" line.
  rm -f "$work"/bench.db* "$work/server.out"
  "$bin/ssechat" --listen 127.0.0.1:0 --store "${STORE:-sqlite:$work/bench.db}" --log warn $unlimited > "$work/server.out" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.05; done
  SERVER_URL=$(sed -n 's/^listening on //p' "$work/server.out")
}
stop_ssechat() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }

case "${WARM:-0}" in # -> starts: how streams open, in the order they run
0) starts=fresh ;;
1) starts=warm ;;
both) starts="fresh warm" ;;
*) echo "WARM must be 0, 1 or both, not ${WARM}" >&2; exit 2 ;;
esac
start_flags() { if [ "$1" = warm ]; then echo --warm; fi; } # START -> load-tool flags

ssechat_fanout() { # LABEL START ARGS...: one run, fresh server, label LABEL-START
  local label=$1 start=$2; shift 2
  start_ssechat
  fanout "$label-$start" --url "$SERVER_URL" --pid "$SERVER_PID" $(start_flags "$start") "$@"
  stop_ssechat
}

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
          f"server CPU {med('cpu_seconds'):.1f} s = {med('cpu_us_per_delivery'):.1f} us/delivery")
PY
}

side_by_side() { # CASE...: medians of CASE-fresh and CASE-warm, one column each
  python3 - "$work" "$@" <<'PY'
import json, os, statistics, sys
work, cases = sys.argv[1], sys.argv[2:]
def med(label, key):
    path = f"{work}/{label}.jsonl"
    values = [r[key] for r in map(json.loads, open(path)) if r.get(key) is not None] if os.path.exists(path) else []
    return statistics.median(values) if values else float("nan")
rows = [("deliveries/s", "deliveries_per_second", 1), ("p50 ms", "p50_ms", 1), ("p99 ms", "p99_ms", 1),
        ("RSS/stream KiB", "rss_per_stream", 1024), ("CPU us/delivery", "cpu_us_per_delivery", 1)]
print(f"{'median':<28}{'fresh':>12}{'warm':>12}{'warm/fresh':>12}")
for case in cases:
    for name, key, unit in rows:
        fresh, warm = med(f"{case}-fresh", key) / unit, med(f"{case}-warm", key) / unit
        ratio = warm / fresh if fresh else float("nan")
        print(f"{case + ' ' + name:<28}{fresh:>12.2f}{warm:>12.2f}{ratio:>12.2f}")
PY
}

labels() { # CASE...: CASE-START for every start that ran
  for case in "$@"; do for start in $starts; do echo "$case-$start"; done; done
}

report() { # CASE...: the medians, and side by side when both starts ran
  summary $(labels "$@")
  if [ "$starts" = "fresh warm" ]; then side_by_side "$@"; fi
}

case "$mode" in
latency)
  runs=${2:-3}
  for i in $(seq "$runs"); do
    for start in $starts; do
      ssechat_fanout 10k-5ps "$start" --streams 10000 --messages 300 --rate 5
      ssechat_fanout 1k-100ps "$start" --streams 1000 --messages 3000 --rate 100
      ssechat_fanout 1k-200ps "$start" --streams 1000 --messages 6000 --rate 200
    done
  done
  report 10k-5ps 1k-100ps 1k-200ps
  ;;
saturation)
  if [ "$starts" != fresh ]; then
    echo "saturation compares with nchan, which serves no room page: run it without WARM" >&2; exit 2
  fi
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
  for start in $starts; do
    ssechat_fanout soak "$start" --streams 19900 --hold "${seconds}s" --messages 10 --rate 1
  done
  report soak
  ;;
rss)
  # Always both ways: the comparison is the point. A few seconds per run.
  runs=${2:-3}
  starts="fresh warm"
  for i in $(seq "$runs"); do
    for start in $starts; do
      ssechat_fanout 3k-idle "$start" --streams 3000 --messages 10 --rate 10 --drain 5s
    done
  done
  report 3k-idle
  ;;
*) echo "usage: [WARM=0|1|both] [STORE=memory] $0 latency|saturation|soak|rss [RUNS|SECONDS]" >&2; exit 2 ;;
esac
