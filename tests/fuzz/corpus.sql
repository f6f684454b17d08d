# Statements that once bypassed pgvakt or came close, one per line (\n for a newline). The
# differential fuzzer (tests/differential_fuzz.rs) runs these before its generated cases.
SELECT 1 </* 2, 'x */ 2 AS a, string_agg(bank_account, ',') FROM contacts --' AS z
SELECT 1 </* 2; UPDATE contacts SET bank_account = 'PWNED' WHERE id = 1; --*/ 2
SELECT 1 >/* 2, $$x */ 2 AS a, bank_account FROM contacts --$$ AS z
SELECT 1 <-- 'x\n, bank_account FROM contacts --'
SELECT * FROM LATERAL query_to_xml('SELECT bank_account FROM contacts', true, false, '') x
SELECT * FROM ROWS FROM (query_to_xml('SELECT bank_account FROM contacts', true, false, '')) x
UPDATE contacts SET notes = notes RETURNING row_to_json(contacts.*)
UPDATE contacts c SET notes = c::text WHERE id = 1
SELECT * FROM (WITH pg_stats AS (SELECT 1) SELECT * FROM pg_stats) a, pg_stats b
EXPLAIN (VERBOSE) SELECT bank_account FROM contacts
SELECT U&"\0062ank_account" FROM contacts
SELECT 'a'\n'b', bank_account FROM contacts
SELECT 0x1F, bank_account FROM contacts
SELECT $a$ x $a$, bank_account FROM contacts
SELECT 1 /* a /* b */ c */, bank_account FROM contacts
