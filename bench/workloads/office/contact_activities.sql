-- The latest activities of one of the clerk's customers.
\set id random(1, :portfolio)
SELECT c.first_name, c.last_name, a.kind, a.subject, a.happened_at FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = :id ORDER BY a.happened_at DESC LIMIT 10;
