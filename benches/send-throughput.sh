#!/usr/bin/env bash
# /send throughput, memory store against SQLite store, side by side in one run.
#
#   benches/send-throughput.sh [RUNS] [SECONDS] [CONCURRENCY]
#
# Starts one server per store on free loopback ports, then alternates the load tool
# between them RUNS times (default 3), SECONDS each (default 10), with CONCURRENCY
# keep-alive posters (default 64). Prints every run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; seconds=${2:-10}; concurrency=${3:-64}
cargo build --release --quiet --bins
bin=target/release
# The load tool is one client posting fast and holding thousands of streams: lift the
# per-client limits that exist for real clients.
unlimited="--send-rate 1000000000 --send-burst 1000000000 --max-streams-per-client 1000000 --max-streams 1000000 --max-connections-per-client 1000000"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start() { # start NAME STORE -> sets URL_<NAME>
  "$bin/ssechat" --listen 127.0.0.1:0 --store "$2" --log warn $unlimited > "$work/$1.out" &
  for _ in $(seq 100); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  printf -v "URL_$1" '%s' "$(sed -n 's/^listening on //p' "$work/$1.out")"
}
start memory memory
start sqlite "sqlite:$work/bench.db"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for i in $(seq "$runs"); do
  for store in memory sqlite; do
    url_var="URL_$store"
    "$bin/ssechat-load" post --url "${!url_var}" --concurrency "$concurrency" --duration "${seconds}s" --json \
      | tee -a "$work/$store.log" | grep -v '^{' | sed "s/^/$store run $i: /"
  done
done
for store in memory sqlite; do
  grep '^{' "$work/$store.log" | sed 's/.*"posts_per_second":\([0-9.]*\).*/\1/' | median > "$work/$store.median"
done
mem=$(cat "$work/memory.median"); sql=$(cat "$work/sqlite.median")
printf 'median posts/s: memory %.0f, sqlite %.0f, sqlite/memory = %.2f\n' "$mem" "$sql" "$(echo "$sql / $mem" | bc -l)"
