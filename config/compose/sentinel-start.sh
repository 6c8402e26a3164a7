#!/bin/sh
# A Sentinel rewrites its configuration file (the current master, the other sentinels),
# so it runs on a copy in its own directory, written once. tests/compose/ runs this
# script on loopback with the addresses below overridden.
set -eu
SENTINEL_DIR="${SENTINEL_DIR:-/data}"
SENTINEL_PORT="${SENTINEL_PORT:-26379}"
# Every interface of the container: the application and the other sentinels reach it.
SENTINEL_BIND="${SENTINEL_BIND:-0.0.0.0}"
REDIS_MASTER_HOST="${REDIS_MASTER_HOST:-redis}"
REDIS_MASTER_PORT="${REDIS_MASTER_PORT:-6379}"
if [ ! -s "$SENTINEL_DIR/sentinel.conf" ]; then
    cat > "$SENTINEL_DIR/sentinel.conf" <<CONF
port ${SENTINEL_PORT}
bind ${SENTINEL_BIND}
dir ${SENTINEL_DIR}
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel monitor ${REDIS_SENTINEL_MASTER} ${REDIS_MASTER_HOST} ${REDIS_MASTER_PORT} 2
sentinel down-after-milliseconds ${REDIS_SENTINEL_MASTER} 5000
sentinel failover-timeout ${REDIS_SENTINEL_MASTER} 30000
sentinel parallel-syncs ${REDIS_SENTINEL_MASTER} 1
CONF
fi
exec redis-server "$SENTINEL_DIR/sentinel.conf" --sentinel
