#!/bin/sh
# The streaming replica: on first start its data directory is a base backup of the
# primary (`pg_basebackup -R` writes standby.signal and primary_conninfo), then it runs
# as a hot standby; later starts resume streaming where they stopped. Arguments are
# passed on to postgres. tests/compose/ runs this script against a private primary.
set -eu
PRIMARY_HOST="${PRIMARY_HOST:-postgres}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -q; do sleep 1; done
    export PGPASSWORD="$REPLICATION_PASSWORD"
    pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -D "$PGDATA" \
        -R -X stream -c fast
    chmod 0700 "$PGDATA"
fi
exec postgres -D "$PGDATA" -c hot_standby=on -c hot_standby_feedback=on "$@"
