-- Not office work: every contact's card, one after the other (a departing employee's copy).
\set id random(1, :contacts)
SELECT id, first_name, last_name, email, phone, street_address, postal_code, city FROM contacts WHERE id = :id;
