#!/bin/bash
# The replica's entrypoint: on first start, clone the primary with pg_basebackup -R (which
# writes standby.signal and primary_conninfo), then run PostgreSQL as a streaming replica.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -h "$PRIMARY_HOST" -p 5432 -q; do sleep 1; done
    PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p 5432 \
        -U replicator -D "$PGDATA" -R -X stream -c fast
    chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
