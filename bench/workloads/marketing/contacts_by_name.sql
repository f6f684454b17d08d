-- Search contacts by last name, first page in first-name order (index on last_name, first_name).
\set n random(1, 10)
SELECT id, first_name, last_name, email FROM contacts WHERE last_name = (ARRAY['Hansen', 'Johansen', 'Olsen', 'Larsen', 'Andersen', 'Pedersen', 'Nilsen', 'Kristiansen', 'Jensen', 'Karlsen'])[:n] ORDER BY first_name LIMIT 20;
