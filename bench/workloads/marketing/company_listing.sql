-- A page of companies with the number of their contacts and latest activity (join + aggregate).
\set cid random(1, :companies - 10)
SELECT co.id, co.name, co.city, count(c.id) AS contacts, max(c.last_activity_at) AS last_activity FROM companies co LEFT JOIN contacts c ON c.company_id = co.id WHERE co.id BETWEEN :cid AND :cid + 9 GROUP BY co.id, co.name, co.city ORDER BY co.name;
