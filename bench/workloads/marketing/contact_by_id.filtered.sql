-- contact_by_id.sql with marketing's row rules written out by hand (retention, consent, restriction).
\set id random(1, :contacts)
SELECT id, first_name, last_name, email FROM contacts c WHERE c.id = :id AND (c.last_activity_at IS NULL OR c.last_activity_at >= now() - interval '10 years') AND EXISTS (SELECT 1 FROM consents k WHERE k.contact_id = c.id AND k.purpose IN ('newsletter', 'marketing') AND (k.withdrawn_at IS NULL OR k.withdrawn_at > now())) AND NOT EXISTS (SELECT 1 FROM restrictions r WHERE r.contact_id = c.id AND (r.lifted_at IS NULL OR r.lifted_at > now()));
