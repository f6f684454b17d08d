-- Search by last name, first page: the same ten common names all day.
\set n random(1, 10)
SELECT id, first_name, last_name, email, phone FROM contacts WHERE last_name = (ARRAY['Hansen', 'Johansen', 'Olsen', 'Larsen', 'Andersen', 'Pedersen', 'Nilsen', 'Kristiansen', 'Jensen', 'Karlsen'])[:n] ORDER BY first_name LIMIT 20;
