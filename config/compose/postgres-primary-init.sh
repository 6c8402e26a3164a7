#!/bin/sh
# Runs once, when the primary's data directory is created (the postgres image runs
# /docker-entrypoint-initdb.d/*.sh then): a role for the streaming replica, and the
# pg_hba line that lets it stream from the compose network.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD}';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
