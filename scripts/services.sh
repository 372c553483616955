#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the tests use, if they are not already answering.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
    local port=$1 name=$2
    for _ in $(seq 1 50); do
        port_open "$port" && return 0
        sleep 0.2
    done
    echo "services: $name did not come up on 127.0.0.1:$port" >&2
    return 1
}

if ! port_open 5432; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_for 5432 PostgreSQL
fi
if ! port_open 6379; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for 6379 Redis
fi
