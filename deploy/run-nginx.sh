#!/bin/sh
# Runs nginx in the foreground with one of the configs in deploy/, on the ports you give it.
#
#   deploy/run-nginx.sh CONFIG PREFIX [LISTEN [NODE...]]
#
#   CONFIG  deploy/nginx.conf (several nodes) or deploy/nginx-chat.conf (one node under /chat/)
#   PREFIX  a directory for everything nginx writes: pid, logs, temp files (created if missing)
#   LISTEN  the port browsers use, or ADDR:PORT (default: the config's, 8080)
#   NODE    ADDR:PORT of each ssechat node; they replace the `server` lines of
#           `upstream ssechat` (default: the config's)
#
# It writes PREFIX/nginx.conf (CONFIG with those ports) and runs
#   nginx -p PREFIX -e stderr -c PREFIX/nginx.conf -g 'daemon off;'
# Stop it with Ctrl-C, or: kill "$(cat PREFIX/nginx.pid)". NGINX=/path/to/nginx picks the binary.
set -eu

if [ $# -lt 2 ]; then
  sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
config=$1 prefix=$2
shift 2
listen=${1:-}
[ $# -gt 0 ] && shift
nodes=$*
[ -r "$config" ] || { echo "run-nginx.sh: cannot read config $config" >&2; exit 2; }

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
# As root, nginx's workers run as nobody: they must be able to reach the temp directories
# (nginx creates those itself and gives them to nobody).
[ "$(id -u)" -eq 0 ] && chmod a+x "$prefix"

awk -v listen="$listen" -v nodes="$nodes" '
  BEGIN { n = split(nodes, node, " ") }
  /^[ \t]*upstream[ \t]+ssechat[ \t]*\{/ { upstream = 1 }
  upstream && /^[ \t]*\}/ { upstream = 0 }
  upstream && n > 0 && /^[ \t]*server[ \t]/ {
    if (!written) {
      for (i = 1; i <= n; i++) {
        line = $0
        sub(/server[ \t]+[^ \t;]+/, "server " node[i], line)
        print line
      }
      written = 1
    }
    next
  }
  listen != "" && /^[ \t]*listen[ \t]/ { sub(/listen[ \t]+[^ \t;]+/, "listen " listen); listened = 1 }
  { print }
  END {
    if (n > 0 && !written) { print "run-nginx.sh: no upstream ssechat block to put the nodes in" > "/dev/stderr"; exit 1 }
    if (listen != "" && !listened) { print "run-nginx.sh: no listen line to change" > "/dev/stderr"; exit 1 }
  }
' "$config" > "$prefix/nginx.conf"

nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
exec "$nginx" -p "$prefix/" -e stderr -c "$prefix/nginx.conf" -g 'daemon off;'
