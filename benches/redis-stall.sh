#!/usr/bin/env bash
# Issue 12's measurement: 60 posts without a key in flight while Redis is stopped (SIGSTOP)
# for 5 s. Counts the first answers by kind, retries every "unknown" 503 with the key its
# Idempotency-Key header gives, then counts what was stored and whether any text was stored
# twice. A curl user following every answer's advice must end with each text stored once.
#
#   benches/redis-stall.sh [EXTRA SSECHAT FLAGS]      e.g. --send-timeout 1s
#
# DELAY (default 0.02 s) is how long after launching the posts Redis is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin ssechat
bin=$PWD/target/debug/ssechat
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
cd "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
redis=$!
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
"$bin" --listen 127.0.0.1:0 --store "redis://127.0.0.1:$port/0" --send-rate 1000000 --send-burst 1000000 \
    --log error "$@" >out.txt 2>err.txt &
until grep -q listening out.txt 2>/dev/null; do sleep 0.05; done
base=$(sed -n 's/listening on //p' out.txt)
post() { curl -s -X POST -H 'content-type: application/json' "$@"; }
post -o /dev/null -d '{"room":"warm","author":"a","text":"w"}' "$base/send" # Redis learns the script
for i in $(seq 1 60); do
    post -D "h.$i" -o "b.$i" -d "{\"room\":\"general\",\"author\":\"ana\",\"text\":\"m$i\"}" "$base/send" &
    posts+=($!)
done
sleep "${DELAY:-0.02}"
kill -STOP "$redis"
sleep 5
kill -CONT "$redis"
wait "${posts[@]}"
echo "first answers:"
for i in $(seq 1 60); do head -1 "h.$i" | cut -d' ' -f2; done | sort | uniq -c
count() { grep -l "$1" b.* | wc -l || true; }
echo "503 \"nothing was saved\": $(count 'nothing was saved'), 503 \"may or may not\": $(count 'may or may not')"
for i in $(seq 1 60); do
    key=$(grep -i '^idempotency-key:' "h.$i" | cut -d' ' -f2 | tr -d '\r' || true)
    if [ -n "$key" ]; then
        post -o /dev/null -w "retried with the key: %{http_code}\n" -H "idempotency-key: $key" \
            -d "{\"room\":\"general\",\"author\":\"ana\",\"text\":\"m$i\"}" "$base/send"
    fi
done | sort | uniq -c
curl -s "$base/history?room=general&since=0&limit=1000" | python3 -c '
import collections, json, sys
texts = collections.Counter(m["text"] for m in json.load(sys.stdin))
print(sum(texts.values()), "stored,", sum(1 for n in texts.values() if n > 1), "texts stored twice")'
