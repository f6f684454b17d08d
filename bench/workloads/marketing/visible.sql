-- Who marketing sees (not a pgbench script): through pgvakt the row rules apply.
SELECT count(*), sum(id) FROM contacts;
