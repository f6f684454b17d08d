#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory: creates the CRM
# database and pgvakt's own login, which reads the catalog and role memberships.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
     -v pw="$PGVAKT_SERVICE_PASSWORD" <<'SQL'
CREATE DATABASE crm;
CREATE ROLE pgvakt LOGIN PASSWORD :'pw';
GRANT CONNECT ON DATABASE crm TO pgvakt;
SQL
