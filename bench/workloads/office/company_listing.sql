-- The clerk's ten companies with their contact counts and latest activity.
SELECT co.id, co.name, co.city, count(c.id) AS contacts, max(c.last_activity_at) AS last_activity FROM companies co LEFT JOIN contacts c ON c.company_id = co.id WHERE co.id BETWEEN 1 AND 10 GROUP BY co.id, co.name, co.city ORDER BY co.name;
