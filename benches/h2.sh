#!/usr/bin/env bash
# HTTP/2 over TLS against plaintext HTTP/1.1, in one run (issue 14, "Measure").
#
#   benches/h2.sh [RUNS]    STREAMS streams (default 10000) on each path, RUNS times (default 1):
#                           HTTP/1.1, one plaintext connection per stream; then HTTP/2 over TLS,
#                           the same streams over CONNECTIONS connections (default 100).
#
# Each run starts a fresh server for each path (release build, the limits of
# benches/fanout.sh lifted, a fresh SQLite store), so each RSS figure is that of a server
# that has only ever held these streams; the TLS one serves a self-signed P-256 certificate
# made here with openssl. HTTP/2 allows 200 streams per connection here (hyper's default),
# so keep STREAMS / CONNECTIONS at or below 200. Each run posts MESSAGES messages (default 50) at RATE per second
# (default 10) and reports the load tool's RSS per stream, CPU per delivery and p99; the
# script ends with the medians side by side and what TLS costs per delivery (the difference).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
streams=${STREAMS:-10000}
connections=${CONNECTIONS:-100}
messages=${MESSAGES:-50}
rate=${RATE:-10}
cargo build --release --quiet --bins
bin=$PWD/target/release
unlimited="--send-rate 1000000000 --send-burst 1000000000 --max-streams-per-client 1000000 --max-streams 1000000 --max-connections-per-client 1000000"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -days 1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

start_server() { # NAME FLAGS... -> SERVER_URL, SERVER_PID (a job of this shell, killed on exit)
  local name=$1; shift
  rm -f "$work/$name".db* "$work/$name.out"
  "$bin/ssechat" --listen 127.0.0.1:0 --store "sqlite:$work/$name.db" --log warn $unlimited "$@" > "$work/$name.out" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  SERVER_URL=$(sed -n 's/^listening on //p' "$work/$name.out")
}

fanout() { # LABEL ARGS...: one load-tool run, its JSON kept in $work/LABEL.jsonl
  local label=$1; shift
  "$bin/ssechat-load" fanout --json --streams "$streams" --messages "$messages" --rate "$rate" "$@" 2>&1 \
    | tee >(grep '^{' >> "$work/$label.jsonl") | grep -v '^{' | sed "s/^/[$label] /"
}

stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }

for _ in $(seq "$runs"); do
  start_server plain
  fanout h1-plain --url "$SERVER_URL" --pid "$SERVER_PID"
  stop_server
  start_server tls --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
  fanout h2-tls --h2 --connections "$connections" --insecure --url "$SERVER_URL" --pid "$SERVER_PID"
  stop_server
done

python3 - "$work" "$streams" "$connections" <<'PY'
import json, statistics, sys
work, streams, connections = sys.argv[1], sys.argv[2], sys.argv[3]
def med(label, key):
    values = [r[key] for r in map(json.loads, open(f"{work}/{label}.jsonl")) if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")
rows = [("open streams", "open", 1), ("deliveries", "deliveries", 1), ("lost", "lost", 1),
        ("p50 ms", "p50_ms", 1), ("p99 ms", "p99_ms", 1), ("RSS per stream KiB", "rss_per_stream", 1024),
        ("CPU us per delivery", "cpu_us_per_delivery", 1)]
print(f"{streams} streams; medians        {'HTTP/1.1 plain':>16}{'HTTP/2 TLS ' + connections + ' conns':>22}")
for name, key, unit in rows:
    print(f"{name:<30}{med('h1-plain', key) / unit:>16.2f}{med('h2-tls', key) / unit:>22.2f}")
plain, tls = med("h1-plain", "cpu_us_per_delivery"), med("h2-tls", "cpu_us_per_delivery")
print(f"TLS + HTTP/2 cost per delivery: {tls - plain:+.2f} us ({tls / plain:.2f}x the plaintext path)")
PY
