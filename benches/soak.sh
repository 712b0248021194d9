#!/usr/bin/env bash
# Reliability soak: 2,000 clients connecting, reading, posting and disconnecting for 10
# minutes against a fresh server (default SQLite store). Reports the server's RSS and open
# file descriptors at the start, the middle and the end, and any message lost.
#
#   benches/soak.sh [CLIENTS] [DURATION]      defaults: 2000 10m
#
# WARM=1 opens every stream the way a browser does (the load tool's --warm: GET /rooms/{room},
# then the stream on the same keep-alive connection), on every reconnect.
# ATTACK=1 runs `ssechat-load attack` (idle sockets, slow bodies, a typing flood, a room
# flood, from 127.0.0.200 up; the soak's clients use 127.0.0.1-32) for the whole soak, with
# every default limit in force, and prints what the attackers got after the soak's report.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-2000}; duration=${2:-10m}
case "${WARM:-0}" in
0) warm=() ;;
1) warm=(--warm) ;;
*) echo "WARM must be 0 or 1, not ${WARM}" >&2; exit 2 ;;
esac
cargo build --release --quiet --bins
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/ssechat --listen 127.0.0.1:0 --store "sqlite:$work/soak.db" --log warn > "$work/out" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$work/out")
attacker=
if [ "${ATTACK:-0}" = 1 ]; then
  seconds=$(python3 -c "import re,sys; v,u=re.fullmatch(r'(\d+)([smh])','$duration').groups(); print(int(v)*{'s':1,'m':60,'h':3600}[u]+10)")
  target/release/ssechat-load attack --url "$url" --duration "${seconds}s" > "$work/attack.out" 2>&1 &
  attacker=$!
fi
target/release/ssechat-load soak --url "$url" --pid "$pid" --clients "$clients" --duration "$duration" "${warm[@]}"
if [ -n "$attacker" ]; then
  wait "$attacker" || true
  echo "--- the attack, meanwhile:"
  cat "$work/attack.out"
fi
