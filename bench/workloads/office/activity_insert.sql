-- Log a call with one of the clerk's customers.
\set id random(1, :portfolio)
INSERT INTO activities (contact_id, kind, subject, body) VALUES (:id, 'call', 'Follow-up', 'Called about the renewal');
