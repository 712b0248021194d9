#!/usr/bin/env bash
# Abuse (issue 11): does an honest fan-out keep every message, and its latency, while the
# server is under attack? Two runs, each on a fresh release server with every default limit
# (nothing lifted, for the attackers or for the honest load):
#
#   1. quiet:  `ssechat-load fanout`, 1,000 streams over 16 source addresses (127.0.0.1-16,
#              63 each: under 100 streams and 256 connections per client), one publisher
#              from 127.0.0.100 posting 4 messages/s (the default allows 5 per client);
#   2. attack: `ssechat-load attack` (idle sockets from 127.0.0.200, slow bodies from .201,
#              a typing flood from .202-205, a room flood from .210-250) started RAMP_SECONDS
#              first and lasting past the end of the same fan-out run.
#
# Prints both runs' streams, lost messages and latency side by side, the attack report, and
# the verdict: under attack lost == 0 (every stream open, every post accepted, every
# message delivered) and p99 <= 2 x the quiet p99. Exits 1 if the verdict fails.
#
#   benches/attack.sh
#
# Knobs (environment): STREAMS=1000 RATE=4 FANOUT_SECONDS=60 RAMP_SECONDS=5
# ATTACK_SECONDS (default FANOUT_SECONDS + 30 + RAMP_SECONDS), ATTACK_FLAGS (more flags for
# `ssechat-load attack`, e.g. "--idle 2000 --typing-flood 0"), STORE (default SQLite).
# A smoke run: FANOUT_SECONDS=15 ATTACK_SECONDS=35 benches/attack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${STREAMS:-1000}; rate=${RATE:-4}; fanout_seconds=${FANOUT_SECONDS:-60}; ramp=${RAMP_SECONDS:-5}
attack_seconds=${ATTACK_SECONDS:-$((fanout_seconds + 30 + ramp))}
sources=16; publisher=127.0.0.100
messages=$(python3 -c "print(max(1, round($rate * $fanout_seconds)))")
python3 - "$streams" "$sources" "$rate" "$fanout_seconds" "$ramp" "$attack_seconds" <<'PY'
import sys
streams, sources, rate, fanout, ramp, attack = map(float, sys.argv[1:])
# The honest load must keep within the server's default limits, or its refusals would be its own.
problems = []
if streams / sources > 100: problems.append(f"{streams:.0f} streams over {sources:.0f} addresses exceed 100 streams per client")
if rate > 4: problems.append(f"RATE {rate} is over 4 messages/s: the publisher must stay under the default 5/s")
if attack < ramp + fanout + 10: problems.append(f"ATTACK_SECONDS {attack:.0f} must outlast RAMP_SECONDS + FANOUT_SECONDS + 10 s of opening and draining")
if problems: sys.exit("benches/attack.sh: " + "; ".join(problems))
PY
cargo build --release --quiet --bins
bin=$PWD/target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start_server() { # -> SERVER_URL, SERVER_PID: default limits
  rm -f "$work"/bench.db* "$work/server.out"
  "$bin/ssechat" --listen 127.0.0.1:0 --store "${STORE:-sqlite:$work/bench.db}" --log warn > "$work/server.out" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.05; done
  SERVER_URL=$(sed -n 's/^listening on //p' "$work/server.out")
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }

fanout() { # LABEL: the honest run, its JSON line kept in $work/LABEL.json
  "$bin/ssechat-load" fanout --json --url "$SERVER_URL" --pid "$SERVER_PID" --streams "$streams" \
    --sources "$sources" --publish-from "$publisher" --publishers 4 --messages "$messages" --rate "$rate" \
    --drain 10s 2>&1 | tee >(grep '^{' > "$work/$1.json") | grep -v '^{' | sed "s/^/[$1] /"
}

echo "quiet: $streams streams, $messages messages at $rate/s"
start_server
fanout quiet
stop_server

echo "under attack: attackers for $attack_seconds s, the same fan-out from $ramp s in"
start_server
# shellcheck disable=SC2086 # ATTACK_FLAGS is a list of flags
"$bin/ssechat-load" attack --json --url "$SERVER_URL" --duration "${attack_seconds}s" ${ATTACK_FLAGS:-} \
  > "$work/attack.out" 2> >(sed 's/^/[attacker] /' >&2) &
attack_pid=$!
sleep "$ramp"
fanout attack
outlasted=1
kill -0 "$attack_pid" 2>/dev/null || outlasted=0
wait "$attack_pid"
stop_server

grep -v '^{' "$work/attack.out"
python3 - "$work" "$outlasted" <<'PY'
import json, sys
work, outlasted = sys.argv[1], sys.argv[2] == "1"
quiet, attack = (json.load(open(f"{work}/{label}.json")) for label in ("quiet", "attack"))
rows = [("streams open", lambda r: f"{r['open']}/{r['streams']}"), ("lost", lambda r: r["lost"]),
        ("post errors", lambda r: r["post_errors"]), ("streams broken", lambda r: r["broken"]),
        ("p50 ms", lambda r: f"{r['p50_ms']:.2f}"), ("p99 ms", lambda r: f"{r['p99_ms']:.2f}"),
        ("max ms", lambda r: f"{r['max_ms']:.2f}"), ("server CPU s", lambda r: f"{r['cpu_seconds'] or 0:.2f}")]
print(f"{'honest fan-out':<16}{'quiet':>14}{'under attack':>14}")
for name, value in rows:
    print(f"{name:<16}{value(quiet):>14}{value(attack):>14}")
kept = attack["lost"] == 0 and attack["open"] == attack["streams"] and attack["post_errors"] == 0
fast = attack["p99_ms"] <= 2 * quiet["p99_ms"]
ok = kept and fast and outlasted
why = [f"lost {attack['lost']}, {attack['open']}/{attack['streams']} streams open, {attack['post_errors']} post errors",
       f"p99 {attack['p99_ms']:.2f} ms {'<=' if fast else '>'} 2 x {quiet['p99_ms']:.2f} ms"]
if not outlasted: why.append("the attack ended before the fan-out did: raise ATTACK_SECONDS")
print(f"verdict: {'PASS' if ok else 'FAIL'} ({'; '.join(why)})")
sys.exit(0 if ok else 1)
PY
