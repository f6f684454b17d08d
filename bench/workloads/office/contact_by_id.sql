-- Open the card of one of the clerk's own customers (a portfolio of :portfolio people).
\set id random(1, :portfolio)
SELECT id, first_name, last_name, email, phone, street_address, postal_code, city, date_of_birth, bank_account FROM contacts WHERE id = :id;
