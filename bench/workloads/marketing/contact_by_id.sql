-- Open a contact card by id, with the columns marketing may read (first_name, last_name, email).
\set id random(1, :contacts)
SELECT id, first_name, last_name, email FROM contacts WHERE id = :id;
