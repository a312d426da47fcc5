#!/bin/bash
# Runs once, when the official postgres image initializes the primary's data directory
# (/docker-entrypoint-initdb.d). The same roles as tests/cluster.sh's demo: demo / demo owning
# database demo; plus the replication role the replica's pg_basebackup uses.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE demo LOGIN PASSWORD 'demo';
CREATE DATABASE demo OWNER demo;
CREATE ROLE replicator LOGIN REPLICATION PASSWORD '${REPLICATION_PASSWORD}';
SQL
# The image's pg_hba.conf allows every database over the network but not replication.
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
