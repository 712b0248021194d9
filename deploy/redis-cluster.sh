#!/bin/sh
# A local Redis Cluster to try ssechat on: three primaries and three replicas on loopback.
#
#   deploy/redis-cluster.sh start DIR [PORT...]
#   deploy/redis-cluster.sh stop DIR
#
#   DIR   a directory for each node's data, log, pid file and cluster config (created if
#         missing); `start` again on the same DIR brings the same cluster and data back
#   PORT  the nodes' client ports: six or more, an even number (default 7000 to 7005); each
#         node also listens on PORT+10000 for the cluster bus
#
# `start` runs one `redis-server --cluster-enabled yes --appendonly yes --appendfsync always`
# per port in the background, joins them with
#   redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes
# (only the first time), waits until every node says cluster_state:ok and every replica is
# in sync with its primary, and prints the --store value for ssechat. `stop` shuts every
# node of DIR down and waits until they are gone (a node still running 15 s after SIGTERM
# gets SIGKILL). REDIS_SERVER and REDIS_CLI pick other binaries.
set -eu

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
command=$1 dir=$2
shift 2
server=${REDIS_SERVER:-redis-server}
cli=${REDIS_CLI:-redis-cli}

# Runs "$@" every 0.1 s until it succeeds, at most 30 s; then fails saying $what.
wait_for() {
  what=$1; shift
  tries=0
  until "$@" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 300 ]; then
      echo "redis-cluster.sh: timed out waiting for $what (stop what runs: $0 stop $dir)" >&2
      exit 1
    fi
    sleep 0.1
  done
}
# Whether process $1 runs (a zombie waiting for its parent does not).
alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }
info_says() { "$cli" -p "$1" cluster info 2>/dev/null | tr -d '\r' | grep -qx "$2"; }
all_ok() { for p in $ports; do info_says "$p" cluster_state:ok || return 1; done; }
# Every replica has its primary's data and follows it (ssechat waits for a replica on writes).
replicas_linked() {
  for p in $ports; do
    role=$("$cli" -p "$p" info replication 2>/dev/null | tr -d '\r')
    case $role in *role:slave*) echo "$role" | grep -qx master_link_status:up || return 1 ;; esac
  done
}

case $command in
start)
  [ $# -gt 0 ] || set -- 7000 7001 7002 7003 7004 7005
  if [ $# -lt 6 ] || [ $(($# % 2)) -ne 0 ]; then
    echo "redis-cluster.sh: give six or more ports, an even number (one replica per primary)" >&2
    exit 2
  fi
  ports=$*
  for p in $ports; do
    case $p in *[!0-9]* | '') echo "redis-cluster.sh: $p is not a port" >&2; exit 2 ;; esac
    if [ "$p" -lt 1 ] || [ "$p" -gt 55535 ]; then
      echo "redis-cluster.sh: port $p: give ports from 1 to 55535 (the bus needs PORT+10000)" >&2
      exit 2
    fi
    if "$cli" -p "$p" ping >/dev/null 2>&1; then
      echo "redis-cluster.sh: a Redis already answers on port $p (stop it first)" >&2
      exit 1
    fi
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for p in $ports; do
    mkdir -p "$dir/$p"
    "$server" --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/$p/nodes.conf" --cluster-node-timeout 5000 \
      --appendonly yes --appendfsync always --dir "$dir/$p" \
      --daemonize yes --pidfile "$dir/$p/redis.pid" --logfile "$dir/$p/redis.log"
  done
  for p in $ports; do wait_for "the node on port $p (see $dir/$p/redis.log)" "$cli" -p "$p" ping; done
  first=${ports%% *}
  # A node that knows only itself was never joined: create the cluster (once).
  if info_says "$first" cluster_known_nodes:1; then
    nodes=$(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done)
    # shellcheck disable=SC2086 # one argument per node
    "$cli" --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
      || { cat "$dir/create.log" >&2; echo "stop the nodes with: $0 stop $dir" >&2; exit 1; }
  fi
  wait_for "cluster_state:ok on every node" all_ok
  wait_for "every replica to be in sync with its primary" replicas_linked
  store=$(echo "$ports" | awk '{ for (i = 1; i <= 3; i++) printf "%s127.0.0.1:%s", (i > 1 ? "," : ""), $i }')
  echo "Redis Cluster up on ports $ports (data in $dir). Run ssechat with:"
  echo "  --store redis+cluster://$store"
  ;;
stop)
  [ -d "$dir" ] || { echo "redis-cluster.sh: no directory $dir" >&2; exit 1; }
  pids=
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null && pids="$pids $pid"
  done
  for pid in $pids; do
    tries=0
    while alive "$pid"; do
      tries=$((tries + 1))
      if [ "$tries" -eq 150 ]; then
        # Redis will not exit when its shutdown save fails (a full disk, a deleted directory);
        # with appendfsync always its append-only file already holds every write.
        echo "redis-cluster.sh: process $pid still runs 15 s after SIGTERM; sending SIGKILL" >&2
        kill -9 "$pid" 2>/dev/null
      elif [ "$tries" -ge 300 ]; then
        echo "redis-cluster.sh: process $pid does not stop" >&2
        exit 1
      fi
      sleep 0.1
    done
  done
  echo "stopped"
  ;;
*) usage ;;
esac
