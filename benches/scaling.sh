#!/usr/bin/env bash
# Issue 16's measurement: Redis CPU per message as nodes are added (BENCHMARKS.md, "Scaling
# out"). One local redis-server (no persistence), N ssechat nodes on it.
#
#   [STORE=cluster] benches/scaling.sh [SECONDS] [NODE COUNTS...]      defaults: 5  1 4 8 16
#
# For each N: N nodes with no reader at all, 8 keep-alive posters on node 1 for SECONDS.
# Then, unless ROOMS=0: 16 nodes and ROOMS rooms (default 100), room i read by one stream on
# node i mod 16 and, for every other room, one more on the next node; one poster per room on
# node 1 for SECONDS. Redis CPU per message is used_cpu_sys + used_cpu_user (INFO cpu)
# after minus before, divided by the messages posted. SSECHAT=PATH runs another build of the
# server (an older one, to compare); the load tool is always this tree's.
#
# STORE=cluster: the same on a local Redis Cluster of three primaries and three replicas
# (deploy/redis-cluster.sh, persistence then switched off as for the single Redis), nodes on
# --store redis+cluster://; default node counts 1 16. Redis CPU per message is then summed
# over all six redis-server processes, and also given per primary and for the replicas
# together. It waits for the machine's Cluster lock (the tests' harness takes the same one).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}; shift || true
mode=${STORE:-redis}
case $mode in
  redis) default_counts=(1 4 8 16) ;;
  cluster) default_counts=(1 16) ;;
  *) echo "scaling.sh: STORE=redis (default) or STORE=cluster, not $mode" >&2; exit 2 ;;
esac
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=("${default_counts[@]}")
rooms=${ROOMS:-100}
cargo build --release --quiet --bins
bin=$PWD/target/release
unlimited="--send-rate 1000000000 --send-burst 1000000000 --max-streams-per-client 1000000 --max-streams 1000000 --max-connections-per-client 1000000"
work=$(mktemp -d)
nodes=()
stop_cluster() { [ "$mode" = cluster ] && deploy/redis-cluster.sh stop "$work/cluster" >/dev/null 2>&1 || true; }
trap 'kill $(jobs -p) 2>/dev/null || true; stop_cluster; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if [ "$mode" = cluster ]; then
  exec 9>"${TMPDIR:-/tmp}/ssechat-redis-cluster-tests.lock"
  flock 9
  # Six client ports whose bus ports (PORT+10000) are free too, below the kernel's own range.
  read -r -a ports < <(python3 -c '
import socket
def free(p):
    try:
        socket.create_server(("127.0.0.1", p)).close(); return True
    except OSError:
        return False
print(*[p for p in range(20000, 22767) if free(p) and free(p + 10000)][:6])')
  deploy/redis-cluster.sh start "$work/cluster" "${ports[@]}" > "$work/cluster.out"
  store=$(sed -n 's/^ *--store //p' "$work/cluster.out")
  for p in "${ports[@]}"; do
    redis-cli -p "$p" config set appendonly no >/dev/null
    redis-cli -p "$p" config set save "" >/dev/null
  done
  primaries=()
  for p in "${ports[@]}"; do
    [ "$(redis-cli -p "$p" role | head -1)" = master ] && primaries+=("$p")
  done
else
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
  ports=("$port") primaries=("$port") store="redis://127.0.0.1:$port/0"
fi

start_nodes() { # N: starts N nodes, their URLs in urls[]
  urls=()
  for i in $(seq "$1"); do
    "${SSECHAT:-$bin/ssechat}" --listen 127.0.0.1:0 --store "$store" --log warn $unlimited > "$work/node$i.out" &
    nodes+=($!)
  done
  for i in $(seq "$1"); do
    until grep -q listening "$work/node$i.out" 2>/dev/null; do sleep 0.05; done
    urls+=("$(sed -n 's/^listening on //p' "$work/node$i.out")")
  done
}
stop_nodes() { kill "${nodes[@]}" 2>/dev/null || true; wait "${nodes[@]}" 2>/dev/null || true; nodes=(); }
cpu() { # PORT: the seconds of CPU that redis-server has used
  redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f", s}'
}
cpus() { for p in "${ports[@]}"; do printf '%s=%s ' "$p" "$(cpu "$p")"; done; }
traffic() { # commands processed and bytes sent, summed over the Redis processes
  for p in "${ports[@]}"; do redis-cli -p "$p" info stats; done | tr -d '\r' |
    awk -F: '/^total_commands_processed:/ {c += $2} /^total_net_output_bytes:/ {b += $2} END {printf "%d %d", c, b}'
}
channels() { # KIND (channels or shardchannels): how many the Redis processes hold, summed
  for p in "${ports[@]}"; do redis-cli -p "$p" pubsub "$1" '*'; done | grep -c . || true
}

measure() { # LABEL POSTERS ROOMS: posts through node 1, prints the Redis CPU per message
  local before after posted sent_before sent_after
  sent_before=$(traffic)
  before=$(cpus)
  "$bin/ssechat-load" post --url "${urls[0]}" --concurrency "$2" --rooms "$3" --duration "${seconds}s" --json \
    > "$work/load.out"
  after=$(cpus)
  sent_after=$(traffic)
  posted=$(grep '^{' "$work/load.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  python3 - "$1" "$seconds" "$posted" "$before" "$after" "${primaries[*]}" "$(channels channels)" \
    "$(channels shardchannels)" "$sent_before" "$sent_after" <<'PY'
import sys
label, seconds, n, before, after, primaries, channels, shard, sent_before, sent_after = sys.argv[1:]
n, seconds = float(n), float(seconds)
parse = lambda s: {p: float(c) for p, c in (x.split("=") for x in s.split())}
before, after, primaries = parse(before), parse(after), primaries.split()
used = {p: (after[p] - before[p]) * 1e6 / n for p in after}
line = f"{label}: {n:.0f} messages, {n / seconds:.0f}/s, Redis CPU {sum(used.values()):.1f} µs per message"
if len(used) > 1:
    each = ", ".join(f"{p}: {used[p]:.1f}" for p in primaries)
    replicas = sum(v for p, v in used.items() if p not in primaries)
    line += f" (all {len(used)} processes; per primary {each}; replicas together {replicas:.1f})"
(c0, b0), (c1, b1) = (map(int, x.split()) for x in (sent_before, sent_after))
line += f", {(c1 - c0) / n:.1f} commands and {(b1 - b0) / n:.0f} bytes sent per message"
line += f", channels subscribed: {channels}"
if len(used) > 1:
    line += f", shard channels: {shard}"
print(line)
PY
}

for n in "${counts[@]}"; do
  start_nodes "$n"
  measure "$n nodes, no readers" 8 1
  stop_nodes
done

if [ "$rooms" -gt 0 ]; then
  start_nodes 16
  # One raw HTTP/1.1 stream per (node, room), read and thrown away until killed.
  python3 - "$rooms" "${urls[@]}" > "$work/readers.out" 2>&1 <<'PY' &
import asyncio, sys
rooms, urls = int(sys.argv[1]), sys.argv[2:]
opened, total = [], rooms + (rooms + 1) // 2
async def read(url, room):
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /events?room=bench-{room} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await reader.read(65536)
    opened.append(room)
    if len(opened) == total:
        print("ready", flush=True)
    while await reader.read(65536):
        pass
async def main():
    streams = [(urls[r % len(urls)], r) for r in range(rooms)]
    streams += [(urls[(r + 1) % len(urls)], r) for r in range(0, rooms, 2)]
    await asyncio.gather(*(read(u, r) for u, r in streams))
asyncio.run(main())
PY
  readers=$!
  # Every stream has its preamble; a second more for the nodes' subscriptions.
  until grep -q ready "$work/readers.out"; do sleep 0.1; done
  sleep 1
  measure "16 nodes, $rooms rooms, readers on 1-2 nodes each" "$rooms" "$rooms"
  kill "$readers" 2>/dev/null || true
  stop_nodes
fi
