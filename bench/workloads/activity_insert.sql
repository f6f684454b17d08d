-- Log a call.
\set id random(1, :contacts)
INSERT INTO activities (contact_id, kind, subject, body) VALUES (:id, 'call', 'Follow-up', 'Called about the renewal');
