-- Open a contact card by id (masked: bank_account, date_of_birth for secretary).
\set id random(1, :contacts)
SELECT id, first_name, last_name, email, phone, street_address, postal_code, city, date_of_birth, bank_account FROM contacts WHERE id = :id;
