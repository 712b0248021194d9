#!/usr/bin/env bash
# Room lists at many rooms: GET / latency on each store once ROOMS rooms hold a message.
#
#   benches/rooms.sh [ROOMS] [REQUESTS]
#
# Starts one server per store on free loopback ports (memory with --max-rooms ROOMS, SQLite
# in a temporary file, Redis on a redis-server of its own), fills ROOMS rooms (default
# 100,000) with one message each through POST /send (64 keep-alive connections), then times
# REQUESTS (default 2,000) sequential GET / on one keep-alive connection, after 100 warm-up
# requests, and prints p50 / p99 / max. Each page lists the 20 most active rooms.
set -euo pipefail
cd "$(dirname "$0")/.."
rooms=${1:-100000}; requests=${2:-2000}
cargo build --release --quiet --bins
bin=target/release
unlimited="--send-rate 1000000000 --send-burst 1000000000"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > "$work/redis.out" &
for _ in $(seq 100); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

start() { # start NAME STORE [FLAGS...] -> sets URL_<NAME>
  local name=$1 store=$2; shift 2
  "$bin/ssechat" --listen 127.0.0.1:0 --store "$store" --log warn $unlimited "$@" > "$work/$name.out" &
  for _ in $(seq 100); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  printf -v "URL_$name" '%s' "$(sed -n 's/^listening on //p' "$work/$name.out")"
}
start memory memory --max-rooms "$rooms"
start sqlite "sqlite:$work/bench.db"
start redis "redis://127.0.0.1:$redis_port/0"

cat > "$work/rooms.py" <<'PY'
import asyncio, json, sys, time
from urllib.parse import urlsplit

async def response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    return status, await reader.readexactly(length)

async def fill(host, port, rooms, posters=64):
    todo, closed = iter(range(rooms)), [0]
    async def poster():
        reader, writer = await asyncio.open_connection(host, port)
        for n in todo:
            body = json.dumps({"room": f"room-{n}", "author": "bench", "text": "hello"}).encode()
            request = (b"POST /send HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                       b"content-length: %d\r\n\r\n%s" % (len(body), body))
            while True:
                try:
                    writer.write(request)
                    status, _ = await response(reader)
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    closed[0] += 1  # counted and reported; the post is sent again
                    reader, writer = await asyncio.open_connection(host, port)
            assert status == 201, status
        writer.close()
    await asyncio.gather(*(poster() for _ in range(posters)))
    return closed[0]

async def measure(host, port, requests, warmup=100):
    reader, writer = await asyncio.open_connection(host, port)
    times = []
    for i in range(warmup + requests):
        started = time.perf_counter()
        writer.write(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
        status, page = await response(reader)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    assert status == 200 and b"rooms/room-" in page, status
    return sorted(times)

async def main(url, rooms, requests):
    u = urlsplit(url)
    started = time.perf_counter()
    closed = await fill(u.hostname, u.port, rooms)
    filled = time.perf_counter() - started
    t = await measure(u.hostname, u.port, requests)
    ms = lambda q: t[min(len(t) - 1, int(q * len(t)))] * 1000
    print(f"{rooms} rooms filled in {filled:.1f} s ({closed} connections closed by the server); GET / x{len(t)}: "
          f"p50 {ms(0.50):.2f} ms, p99 {ms(0.99):.2f} ms, max {t[-1] * 1000:.2f} ms")

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
PY
for store in memory sqlite redis; do
  url_var="URL_$store"
  printf '%-7s ' "$store:"
  python3 "$work/rooms.py" "${!url_var}" "$rooms" "$requests"
done
