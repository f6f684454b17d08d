-- Find a contact by e-mail address (index on email): the address of a random contact, then its card.
\set id random(1, :contacts)
SELECT id, first_name, last_name, email FROM contacts WHERE email = (SELECT email FROM contacts WHERE id = :id);
