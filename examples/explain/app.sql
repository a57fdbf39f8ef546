-- A web shop's session, as its app sends it. Try:
--   pgroute explain examples/explain/app.sql
--   pgroute explain examples/explain/app.sql --no-replicas
--   pgroute explain examples/explain/app.sql --json

-- Sign-in: plain reads go to a replica.
select id, password_hash, locked_until from users where email = 'ada@example.com';
select p.name, p.price_cents, s.quantity
  from products p join stock s on s.product_id = p.id
 where p.category = 'books' and p.active
 order by p.price_cents
 limit 20;

-- The search box: a dollar-quoted pattern that mentions DELETE is still a string.
select id, name from products where name ilike $$%delete%$$ or description @@ plainto_tsquery('english', 'delete key');

-- Right after a write the app wants to read its own data: it asks for the primary.
update users set last_seen_at = now() where id = 42;
/* pgroute: primary */ select last_seen_at from users where id = 42;

-- Checkout: one read-write transaction on the primary, rows locked as they are read.
begin;
select quantity from stock where product_id = 7 for update;
update stock set quantity = quantity - 1 where product_id = 7;
insert into orders (id, user_id, total_cents) values (nextval('orders_id_seq'), 42, 1999) returning id;
insert into order_lines (order_id, product_id, quantity) values (currval('orders_id_seq'), 7, 1);
savepoint before_coupon;
update coupons set used = true where code = 'WELCOME10' and not used;
rollback to savepoint before_coupon;
commit;

-- Order history page: a read-only transaction may run on a replica as a whole.
begin read only;
select id, total_cents, created_at from orders where user_id = 42 order by created_at desc limit 10;
select order_id, product_id, quantity from order_lines where order_id = any (array[101, 102, 103]);
commit;

-- A data-modifying CTE hidden in what looks like a report.
with expired as (
  delete from carts where updated_at < now() - interval '30 days' returning id
)
select count(*) from expired;

-- A reporting section: the session sends everything to replicas until it says otherwise.
set pgroute.target = replica;
select date_trunc('day', created_at) as day, count(*), sum(total_cents)
  from orders
 where created_at > now() - interval '7 days'
 group by 1
 order by 1;
select category, percentile_cont(0.5) within group (order by price_cents) from products group by category;
reset pgroute.target;

-- Sequences, the app's own functions, session advisory locks and LISTEN need the primary. (The last two also
-- keep the session on its server connection from then on, in transaction pooling mode.)
select nextval('cart_id_seq');
select app.recompute_recommendations(42);
set statement_timeout = '5s';
show search_path;
select pg_try_advisory_lock(hashtext('nightly-export'));
listen order_events;
