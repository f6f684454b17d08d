-- pgbench's built-in select-only transaction, as a script so fixed-rate runs can report it per statement.
\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
