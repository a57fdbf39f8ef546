// Invariant: `pgroute explain FILE --json` (run as a user runs it, in a subprocess) and the pure explainScript report,
// for every statement of the table below, exactly the target and the reason written on its row — the decision
// `pgroute serve` makes, since both go through the same router — and exit 1 exactly when a statement fails to parse.
//
// Each group is one script, run as one session from top to bottom: rows after BEGIN or SET pgroute.target are
// routed in that state, so the order of the rows matters.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { explainScript, optionsFrom, type ExplainRow } from "../../src/cli/explain.ts";
import { loadConfig } from "../../src/config/load.ts";
import { loadParser } from "../../src/router/parser.ts";

const ROOT = join(import.meta.dir, "../..");
const EXPLAIN = [process.execPath, join(ROOT, "src/cli/main.ts"), "explain"];

/** sql, target, reason. A row's SQL is written to the script followed by `;` unless it ends with one already. */
type Row = readonly [sql: string, target: string, reason: string];

// The reasons that recur on many rows.
const READ = "read-only query";
const IN_PRIMARY = "inside a transaction on the primary";
const IN_REPLICA = "inside a transaction on the replica";
const BEGIN_RW = "BEGIN of a read-write transaction";
const RO_TX = "read-only transaction";
const SERIALIZABLE = "SERIALIZABLE transaction (a hot standby refuses it)";
const PGROUTE = "session setting handled by pgroute";
const DEFERRED = "BEGIN held back: the first statement decides where the transaction runs";
const writes = (statement: string) => `${statement} writes`;
const lock = (clause: string) => `locking clause ${clause}`;
const cte = (statement: string) => `data-modifying CTE (${statement})`;
const session = (statement: string) => `session command (${statement})`;
const control = (statement: string) => `transaction control (${statement})`;
const needsPrimary = (fn: string) => `calls ${fn}(), which needs the primary`;
const unknown = (fn: string) => `calls ${fn}(), not known to be read-only`;
const refused = (why: string) => `replica requested for a statement that may write (${why}): refused`;
const pinned = (why: string) => `session pinned to its connection on the primary (${why})`;

const SELECTS: Row[] = [
  ["select 1", "replica", READ],
  ["select * from t", "replica", READ],
  ["select a, b from t where id = 1 and b <> 'x' order by a desc limit 10 offset 5", "replica", READ],
  ["select distinct on (a) a, b from t order by a, b", "replica", READ],
  ["select * from t join u on u.id = t.id left join v using (id)", "replica", READ],
  ["select * from t cross join u natural join v full join w on true", "replica", READ],
  ["select * from t where id in (select id from u)", "replica", READ],
  ["select * from t where exists (select 1 from u where u.id = t.id)", "replica", READ],
  ["select (select max(a) from t) as m, (select count(*) from u) as n", "replica", READ],
  ["select * from (select a from t) as sub", "replica", READ],
  ["select * from t, lateral (select * from u where u.id = t.id) as l", "replica", READ],
  ["select a from t union select id from u", "replica", READ],
  ["select a from t union all select id from u intersect select id from v except select 1", "replica", READ],
  ["values (1, 'a'), (2, 'b')", "replica", READ],
  ["table t", "replica", READ],
  ["with x as (select * from t) select * from x", "replica", READ],
  ["with recursive r(n) as (select 1 union all select n + 1 from r where n < 10) select * from r", "replica", READ],
  ["select row_number() over (partition by a order by id), sum(a) over w from t window w as (order by id)", "replica", READ],
  ["select rank() over (order by a), lag(a) over (order by id), ntile(4) over () from t", "replica", READ],
  ["select a, count(*), avg(id), string_agg(b, ','), array_agg(id order by id) from t group by a having count(*) > 1", "replica", READ],
  ["select count(*) filter (where a > 1), bool_and(a > 0), percentile_cont(0.5) within group (order by a) from t", "replica", READ],
  ["select case when a > 1 then 'big' when a = 1 then 'one' else 'small' end from t", "replica", READ],
  ["select a::text, cast(id as bigint), '2024-01-01'::date + interval '1 day', b::varchar(10) from t", "replica", READ],
  ["select array[1, 2, 3], (array[1, 2])[1], '{1,2}'::int[] && array[2], array_length(array[1], 1)", "replica", READ],
  [`select data->'a', data->>'b', data#>'{a,b}', data#>>'{a}', data @> '{"a":1}', data ? 'a' from t`, "replica", READ],
  ["select jsonb_build_object('id', id), to_jsonb(t), row_to_json(t), jsonb_path_query(data, '$.a') from t", "replica", READ],
  ["select now(), current_date, current_timestamp, current_user, session_user, version(), pg_is_in_recovery()", "replica", READ],
  ["select coalesce(a, 0), nullif(b, ''), greatest(a, 1), least(a, 2) from t", "replica", READ],
  ["select extract(year from now()), substring('abc' from 2), position('b' in 'abc'), trim(both ' ' from b) from t", "replica", READ],
  ["select x from generate_series(1, 3) as x", "replica", READ],
  ["select * from t tablesample system (10)", "replica", READ],
  ["select pg_catalog.now(), pg_catalog.lower('A')", "replica", READ],
  ["select gen_random_uuid(), random(), md5('x'), pg_sleep(0), current_setting('search_path')", "replica", READ],
  ["select pg_last_wal_replay_lsn(), txid_current_snapshot(), pg_backend_pid()", "replica", READ],
  ["select id from t where a = $1", "replica", READ],
  ["show search_path", "replica", READ],
  ["show transaction isolation level", "replica", READ],
  ["show all", "replica", READ],
];

const LOCKING: Row[] = [
  ["select * from t for update", "primary", lock("FOR UPDATE")],
  ["select * from t for no key update", "primary", lock("FOR NO KEY UPDATE")],
  ["select * from t for share", "primary", lock("FOR SHARE")],
  ["select * from t for key share", "primary", lock("FOR KEY SHARE")],
  ["select * from t where id = 1 for update nowait", "primary", lock("FOR UPDATE")],
  ["select * from t limit 1 for update skip locked", "primary", lock("FOR UPDATE")],
  ["select * from t join u using (id) for share of t", "primary", lock("FOR SHARE")],
  ["select * from (select * from t for update) as s", "primary", lock("FOR UPDATE")],
  ["select * from t where id in (select id from u for share)", "primary", lock("FOR SHARE")],
  ["with x as (select * from t for no key update) select * from x", "primary", lock("FOR NO KEY UPDATE")],
  ["with a as (with b as (select * from t for key share) select * from b) select * from a", "primary", lock("FOR KEY SHARE")],
  ["select id from u union (select id from t for key share)", "primary", lock("FOR KEY SHARE")],
  ["select 1 union all select 2 union all (select id from t for update)", "primary", lock("FOR UPDATE")],
  ["select * from t, lateral (select * from u where u.id = t.id for update) as l", "primary", lock("FOR UPDATE")],
];

const SELECT_INTO: Row[] = [
  ["select * into t2 from t", "primary", "SELECT INTO creates a table"],
  ["select * into temp t3 from t", "primary", "SELECT INTO creates a table"],
  ["select * into temporary table t4 from t", "primary", "SELECT INTO creates a table"],
  ["select * into unlogged t5 from t", "primary", "SELECT INTO creates a table"],
  ["with x as (select 1 as a) select * into t6 from x", "primary", "SELECT INTO creates a table"],
  // The INTO of a set operation's first branch creates the table of the whole.
  ["select 1 as a into t7 union select 2", "primary", "SELECT INTO creates a table"],
];

const WRITABLE_CTES: Row[] = [
  ["with d as (delete from t where id = 1 returning *) select * from d", "primary", cte("DELETE")],
  ["with c as (update t set a = 2 returning *) select count(*) from c", "primary", cte("UPDATE")],
  ["with i as (insert into t values (9) returning id) select id from i", "primary", cte("INSERT")],
  ["with m as (merge into t using u on t.id = u.id when matched then delete returning t.*) select * from m", "primary", cte("MERGE")],
  ["with a as (with b as (delete from t returning *) select * from b) select * from a", "primary", cte("DELETE")],
  ["select * from (with d as (delete from t returning *) select * from d) as s", "primary", cte("DELETE")],
  ["select * from t where id in (with i as (insert into u values (1) returning id) select id from i)", "primary", cte("INSERT")],
  ["with r as (select 1), w as (update t set a = 1 returning *) select * from r", "primary", cte("UPDATE")],
  ["with d as (delete from t returning *) insert into u select id from d", "primary", writes("INSERT")],
];

const WRITES: Row[] = [
  ["insert into t (id, a) values (1, 2)", "primary", writes("INSERT")],
  ["insert into t select * from t on conflict do nothing", "primary", writes("INSERT")],
  ["insert into t values (1) on conflict (id) do update set a = excluded.a returning *", "primary", writes("INSERT")],
  ["update t set a = a + 1 where id = 1", "primary", writes("UPDATE")],
  ["update t set a = u.id from u where u.id = t.id", "primary", writes("UPDATE")],
  ["delete from t where id = 1", "primary", writes("DELETE")],
  ["delete from t using u where u.id = t.id returning t.*", "primary", writes("DELETE")],
  ["merge into t using u on t.id = u.id when matched then update set a = 1 when not matched then insert (id) values (u.id)", "primary", writes("MERGE")],
  ["create table t9 (id int primary key, b text)", "primary", writes("CREATE TABLE")],
  ["create temp table tmp (id int)", "primary", writes("CREATE TABLE")],
  // A temporary table lives in the session: serve keeps the session on its primary connection until DISCARD ALL.
  ["select * from tmp", "primary", pinned("temporary table")],
  ["discard all", "primary", session("DISCARD")],
  ["create table t10 as select * from t", "primary", writes("CREATE TABLE AS")],
  ["create view vw as select * from t", "primary", writes("CREATE VIEW")],
  ["create index on t (a)", "primary", writes("CREATE INDEX")],
  ["create index concurrently i1 on t (a)", "primary", writes("CREATE INDEX")],
  ["create unique index i2 on t (b) where b is not null", "primary", writes("CREATE INDEX")],
  ["alter table t add column c int", "primary", writes("ALTER TABLE")],
  ["drop table if exists t9", "primary", writes("DROP")],
  ["drop index i2", "primary", writes("DROP")],
  ["truncate t", "primary", writes("TRUNCATE")],
  ["truncate table t, u restart identity cascade", "primary", writes("TRUNCATE")],
  ["vacuum t", "primary", writes("VACUUM/ANALYZE")],
  ["vacuum (verbose, analyze) t", "primary", writes("VACUUM/ANALYZE")],
  ["vacuum full", "primary", writes("VACUUM/ANALYZE")],
  ["analyze t", "primary", writes("VACUUM/ANALYZE")],
  ["analyze", "primary", writes("VACUUM/ANALYZE")],
  ["grant select on t to public", "primary", writes("GRANT")],
  ["refresh materialized view mv", "primary", writes("REFRESH MATERIALIZED VIEW")],
  ["refresh materialized view concurrently mv", "primary", writes("REFRESH MATERIALIZED VIEW")],
  ["comment on table t is 'delete me'", "primary", writes("COMMENT")],
  ["create extension if not exists pgcrypto", "primary", writes("CREATE EXTENSION")],
  ["create function f() returns int language sql as $$ select 1 $$", "primary", writes("CREATE FUNCTION")],
  ["create function g() returns int language sql begin atomic select 1; select 2; end", "primary", writes("CREATE FUNCTION")],
  ["checkpoint", "primary", writes("CHECKPOINT")],
  ["cluster t using i1", "primary", writes("CLUSTER")],
  ["reindex table t", "primary", writes("REINDEX")],
  ["alter system set work_mem = '8MB'", "primary", writes("ALTER SYSTEM")],
  ["create role r2", "primary", writes("CREATE ROLE")],
  ["copy t from stdin", "primary", writes("COPY FROM")],
  ["copy t (id, a) from '/tmp/t.csv' with (format csv)", "primary", writes("COPY FROM")],
  ["copy t to stdout", "replica", READ],
  ["copy t (id) to stdout with (format csv, header)", "replica", READ],
  ["copy (select * from t where a > 1) to stdout", "replica", READ],
  ["copy (select nextval('s')) to stdout", "primary", needsPrimary("nextval")],
  ["copy (delete from t returning *) to stdout", "primary", writes("DELETE")],
  ["copy (insert into t values (1) returning *) to stdout", "primary", writes("INSERT")],
  ["call p()", "primary", writes("CALL")],
  ["call p(1, 'x')", "primary", writes("CALL")],
  ["do $$ begin perform 1; end $$", "primary", writes("DO")],
  ["do language plpgsql $body$ begin delete from t; end $body$", "primary", writes("DO")],
  ["lock table t in access exclusive mode", "primary", writes("LOCK")],
  ["lock t", "primary", writes("LOCK")],
];

const EXPLAINS: Row[] = [
  ["explain select * from t", "replica", READ],
  ["explain (costs off, format json) select * from t join u using (id)", "replica", READ],
  ["explain analyze select * from t", "replica", READ],
  ["explain (analyze, buffers) select * from t", "replica", READ],
  // Without ANALYZE nothing runs, and a standby plans writes.
  ["explain delete from t", "replica", READ],
  ["explain insert into t values (1)", "replica", READ],
  ["explain select nextval('s')", "replica", READ],
  ["explain create table t11 as select 1", "replica", READ],
  ["explain analyze delete from t", "primary", writes("DELETE")],
  ["explain (analyze true) update t set a = 1", "primary", writes("UPDATE")],
  // Any ANALYZE option counts: its value may be a literal, which the shape cache cannot tell apart.
  ["explain (analyze false) delete from t", "primary", writes("DELETE")],
  ["explain analyze select nextval('s')", "primary", needsPrimary("nextval")],
  ["explain analyze select * from t for update", "primary", lock("FOR UPDATE")],
  ["explain analyze create table t11 as select 1", "primary", writes("CREATE TABLE AS")],
  // The prepared statement exists only where PREPARE ran: the primary.
  ["explain execute q1(1)", "primary", session("EXECUTE")],
];

const SESSION: Row[] = [
  ["set search_path = app, public", "primary", session("SET")],
  ["set statement_timeout to '5s'", "primary", session("SET")],
  ["set local lock_timeout = '1s'", "primary", session("SET")],
  ["set time zone 'UTC'", "primary", session("SET")],
  ["reset search_path", "primary", session("RESET")],
  ["reset all", "primary", session("RESET")],
  ["set transaction isolation level repeatable read", "primary", control("SET TRANSACTION")],
  ["discard all", "primary", session("DISCARD")],
  ["listen jobs", "primary", session("LISTEN")],
  ["unlisten jobs", "primary", session("UNLISTEN")],
  ["unlisten *", "primary", session("UNLISTEN")],
  ["notify jobs", "primary", writes("NOTIFY")],
  ["notify jobs, 'payload'", "primary", writes("NOTIFY")],
  ["prepare q1 (int) as select * from t where id = $1", "primary", session("PREPARE")],
  ["prepare q2 as delete from t", "primary", session("PREPARE")],
  ["execute q1(1)", "primary", session("EXECUTE")],
  ["deallocate q1", "primary", session("DEALLOCATE")],
  ["deallocate all", "primary", session("DEALLOCATE")],
  // A WITH HOLD cursor outlives its transaction; FETCH and CLOSE go to the primary, so DECLARE does too.
  ["declare c1 cursor with hold for select * from t", "primary", session("DECLARE WITH HOLD")],
  ["declare c1 cursor with hold for select * from t for update", "primary", lock("FOR UPDATE")],
  ["fetch 10 from c1", "primary", session("FETCH")],
  ["move next in c1", "primary", session("FETCH")],
  ["close c1", "primary", session("CLOSE")],
  // PREPARE and the WITH HOLD cursor pinned the session to the primary; DISCARD ALL lets it go.
  ["discard all", "primary", session("DISCARD")],
];

const FUNCTIONS: Row[] = [
  ["select nextval('s')", "primary", needsPrimary("nextval")],
  ["select pg_catalog.nextval('s')", "primary", needsPrimary("pg_catalog.nextval")],
  [`select "nextval"('s')`, "primary", needsPrimary("nextval")],
  ["select NextVal('s')", "primary", needsPrimary("nextval")],
  ["select setval('s', 10)", "primary", needsPrimary("setval")],
  ["select currval('s')", "primary", needsPrimary("currval")],
  ["select lastval()", "primary", needsPrimary("lastval")],
  ["select id, nextval('s') from t", "primary", needsPrimary("nextval")],
  ["select * from t where id = (select nextval('s'))", "primary", needsPrimary("nextval")],
  ["select pg_advisory_lock(1)", "primary", needsPrimary("pg_advisory_lock")],
  ["select pg_try_advisory_lock(1, 2)", "primary", needsPrimary("pg_try_advisory_lock")],
  ["select pg_advisory_xact_lock(42)", "primary", needsPrimary("pg_advisory_xact_lock")],
  ["select pg_advisory_unlock_all()", "primary", needsPrimary("pg_advisory_unlock_all")],
  // The session advisory locks above pinned the session to the primary, until DISCARD ALL.
  ["select 1", "primary", pinned("session advisory lock")],
  ["discard all", "primary", session("DISCARD")],
  ["select txid_current()", "primary", needsPrimary("txid_current")],
  ["select pg_current_xact_id()", "primary", needsPrimary("pg_current_xact_id")],
  ["select pg_current_wal_lsn()", "primary", needsPrimary("pg_current_wal_lsn")],
  ["select pg_switch_wal()", "primary", needsPrimary("pg_switch_wal")],
  ["select lo_create(0)", "primary", needsPrimary("lo_create")],
  ["select lo_import('/tmp/x')", "primary", needsPrimary("lo_import")],
  ["select lo_unlink(1)", "primary", needsPrimary("lo_unlink")],
  ["select set_config('app.user', '42', false)", "primary", needsPrimary("set_config")],
  ["select pg_catalog.set_config('search_path', 'app', true)", "primary", needsPrimary("pg_catalog.set_config")],
  ["select pg_notify('jobs', 'x')", "primary", needsPrimary("pg_notify")],
  ["select pg_reload_conf()", "primary", needsPrimary("pg_reload_conf")],
  ["select pg_terminate_backend(123)", "primary", needsPrimary("pg_terminate_backend")],
  ["select count(*) from t where a > 0 and nextval('s') > 0", "primary", needsPrimary("nextval")],
  ["select my_func()", "primary", unknown("my_func")],
  ["select app.my_func(1)", "primary", unknown("app.my_func")],
  ["select * from my_srf()", "primary", unknown("my_srf")],
  ["select id, compute_score(a) from t", "primary", unknown("compute_score")],
  // A function named like a built-in in another schema is the user's own.
  ["select public.nextval('s')", "primary", unknown("public.nextval")],
  ["select 'nextval(1)', 'my_func()'", "replica", READ],
  ["select t.nextval from t", "replica", READ],
];

const TRANSACTIONS: Row[] = [
  ["begin", "primary", BEGIN_RW],
  ["select * from t", "primary", IN_PRIMARY],
  ["declare c3 cursor for select * from t", "primary", IN_PRIMARY],
  ["fetch 5 from c3", "primary", IN_PRIMARY],
  ["savepoint sp1", "primary", IN_PRIMARY],
  ["rollback to savepoint sp1", "primary", IN_PRIMARY],
  ["release savepoint sp1", "primary", IN_PRIMARY],
  ["/* pgroute: replica */ select 1", "primary", IN_PRIMARY],
  ["commit", "primary", IN_PRIMARY],
  ["begin read only", "replica", RO_TX],
  ["select * from t", "replica", IN_REPLICA],
  ["declare c4 cursor for select * from t", "replica", IN_REPLICA],
  // Inside a transaction everything follows it; the replica itself refuses a write.
  ["select nextval('s')", "replica", IN_REPLICA],
  ["end", "replica", IN_REPLICA],
  ["start transaction isolation level repeatable read, read only", "replica", RO_TX],
  ["select 1", "replica", IN_REPLICA],
  ["rollback", "replica", IN_REPLICA],
  // A hot standby refuses SERIALIZABLE, even read-only.
  ["begin isolation level serializable", "primary", SERIALIZABLE],
  ["abort", "primary", IN_PRIMARY],
  ["begin transaction isolation level serializable read only deferrable", "primary", SERIALIZABLE],
  ["commit", "primary", IN_PRIMARY],
  ["start transaction read write", "primary", BEGIN_RW],
  ["commit", "primary", IN_PRIMARY],
  ["begin work", "primary", BEGIN_RW],
  ["end work", "primary", IN_PRIMARY],
  ["commit", "primary", control("COMMIT")],
  ["savepoint outside", "primary", control("SAVEPOINT")],
  ["set default_transaction_read_only = on", "primary", session("SET")],
  ["begin", "replica", RO_TX],
  ["select * from t", "replica", IN_REPLICA],
  ["commit", "replica", IN_REPLICA],
  ["begin read write", "primary", BEGIN_RW],
  ["commit", "primary", IN_PRIMARY],
  ["reset default_transaction_read_only", "primary", session("RESET")],
  ["begin", "primary", BEGIN_RW],
  ["rollback", "primary", IN_PRIMARY],
];

const HINTS: Row[] = [
  ["/* pgroute: primary */ select * from t", "primary", "hint: primary"],
  ["/* pgroute: replica */ select * from t", "replica", "hint: replica"],
  ["/*pgroute:replica*/ select 1", "replica", "hint: replica"],
  ["-- pgroute: primary\nselect 1", "primary", "hint: primary"],
  ["select /* pgroute: primary */ 1", "primary", "hint: primary"],
  ["select 1 -- pgroute: primary\n", "primary", "hint: primary"],
  ["/* read-primary */ select 1", "primary", "hint: primary"],
  ["/* read-replica */ select 1", "replica", "hint: replica"],
  ["/* PGROUTE: PRIMARY */ select 1", "primary", "hint: primary"],
  ["/* Read-Primary */ select 1", "primary", "hint: primary"],
  ["-- PgRoute : Replica\nselect 1", "replica", "hint: replica"],
  ["/* pgroute: primary */ /* pgroute: replica */ select 1", "replica", "hint: replica"],
  ["/* pgroute: primary */ delete from t", "primary", "hint: primary"],
  ["/* pgroute: primary */ show search_path", "primary", "hint: primary"],
  ["/* pgroute: replica */ show search_path", "replica", "hint: replica"],
  ["/* pgroute: replica */ delete from t where id = 1", "refused", refused(writes("DELETE"))],
  ["/* read-replica */ insert into t values (1)", "refused", refused(writes("INSERT"))],
  ["/* pgroute: replica */ select nextval('s')", "refused", refused(needsPrimary("nextval"))],
  ["/* pgroute: replica */ select my_func()", "refused", refused(unknown("my_func"))],
  ["/* pgroute: replica */ select * from t for update", "refused", refused(lock("FOR UPDATE"))],
  ["/* pgroute: replica */ set search_path = app", "refused", refused(session("SET"))],
  ["/* pgroute: replica */ begin", "replica", "hint: replica"],
  ["select 1", "replica", IN_REPLICA],
  ["commit", "replica", IN_REPLICA],
  // Not hints: inside a string, a dollar quote or a quoted identifier, or a longer word.
  ["select '/* pgroute: primary */'", "replica", READ],
  ["select $$ -- pgroute: primary $$", "replica", READ],
  ["select e'\\' /* pgroute: primary */'", "replica", READ],
  [`select 1 as "/* pgroute: primary */"`, "replica", READ],
  [`select "-- pgroute: primary" from t`, "replica", READ],
  ["/* pgroute: replica-set */ delete from t", "primary", writes("DELETE")],
  ["/* pgroute: primaryish */ select 1", "replica", READ],
];

const SESSION_TARGET: Row[] = [
  ["set pgroute.target = replica", "pgroute", PGROUTE],
  ["show pgroute.target", "pgroute", "answered by pgroute (replica)"],
  ["select * from t", "replica", "SET pgroute.target = replica"],
  ["select my_func()", "refused", refused(unknown("my_func"))],
  ["delete from t", "refused", refused(writes("DELETE"))],
  ["/* pgroute: primary */ select 1", "primary", "hint: primary"],
  // PRIMARY is a reserved word in Postgres; pgroute takes its own setting's value as written.
  ["set pgroute.target = primary", "pgroute", PGROUTE],
  ["select 1", "primary", "SET pgroute.target = primary"],
  ["insert into t values (5)", "primary", "SET pgroute.target = primary"],
  ["/* pgroute: replica */ select 1", "replica", "hint: replica"],
  ["set pgroute.target to 'auto'", "pgroute", PGROUTE],
  ["select 1", "replica", READ],
  ["SET SESSION pgroute.target = 'replica'", "pgroute", PGROUTE],
  ["select 1", "replica", "SET pgroute.target = replica"],
  ["reset pgroute.target", "pgroute", PGROUTE],
  ["select 1", "replica", READ],
  ["show pgroute.target", "pgroute", "answered by pgroute (auto)"],
  ["set pgroute.target = nowhere", "pgroute", `invalid value for parameter "pgroute.target": "nowhere" (expected primary, replica or auto)`],
  ["set pgroute.colour = 'red'", "pgroute", `unrecognized configuration parameter "pgroute.colour"`],
  ["show pgroute.colour", "pgroute", `unrecognized configuration parameter "pgroute.colour"`],
  ["select 1", "replica", READ],
  // Read-your-writes settings (src/session/consistency.ts) are pgroute's too.
  ["set pgroute.min_lsn = '0/1'", "pgroute", PGROUTE],
  ["show pgroute.min_lsn", "pgroute", "answered by pgroute (0/1)"],
  ["select 1", "replica", READ],
  ["reset pgroute.min_lsn", "pgroute", PGROUTE],
  ["set pgroute.min_lsn = 'soon'", "pgroute", `invalid value for parameter "pgroute.min_lsn": "soon" (expected a WAL position like 16/B374D848)`],
  ["set pgroute.consistency = lsn", "pgroute", PGROUTE],
  ["show pgroute.consistency", "pgroute", "answered by pgroute (lsn)"],
  ["reset pgroute.consistency", "pgroute", PGROUTE],
  ["set pgroute.lsn = '0/1'", "pgroute", `parameter "pgroute.lsn" cannot be changed (it is the position of this session's last write; set pgroute.min_lsn)`],
];

const LEXICAL_TRAPS: Row[] = [
  ["/* delete from t */ select 1", "replica", READ],
  ["-- delete from t\nselect 1", "replica", READ],
  ["/* outer /* delete from t */ still a comment; */ select 1", "replica", READ],
  ["select 1 /* ; delete from t */", "replica", READ],
  ["select $$delete from t$$", "replica", READ],
  ["select $fn$ delete from t; $fn$", "replica", READ],
  ["select $a$ $b$ delete from t; $b$ $a$", "replica", READ],
  ["select E'it\\'s; delete from t'", "replica", READ],
  ["select e'\\\\', 'delete'", "replica", READ],
  ["select 'it''s; delete from t'", "replica", READ],
  ["select * from t where b = 'update t set a = 1'", "replica", READ],
  [`select "delete" from "update"`, "replica", READ],
  [`select "DELETE", "insert"."into" from t as "insert"`, "replica", READ],
  [`with "with" as (select 1 as "select") select "select" from "with"`, "replica", READ],
  ["SeLeCt * FrOm T", "replica", READ],
  ["sElEcT * fRoM t FoR uPdAtE", "primary", lock("FOR UPDATE")],
  ["DELETE FROM T", "primary", writes("DELETE")],
  ["select ünïcödé from tåble", "replica", READ],
  ["select 名前 from 表", "replica", READ],
  ["select U&'d\\0061t\\+000061'", "replica", READ],
  [`select U&"d\\0061t" from t`, "replica", READ],
  ["select x'1f', b'101', n'abc', 1.5e-3, .5", "replica", READ],
  ["select 1::text || $$;$$ || ';'", "replica", READ],
];

/** The default session: users' target auto, replicas healthy, transactions on the primary. */
const DEFAULT_ROWS: Row[] = [
  ...SELECTS, ...LOCKING, ...SELECT_INTO, ...WRITABLE_CTES, ...WRITES, ...EXPLAINS, ...SESSION, ...FUNCTIONS,
  ...TRANSACTIONS, ...HINTS, ...SESSION_TARGET, ...LEXICAL_TRAPS,
];

const FIRST_STATEMENT: Row[] = [
  ["begin", "deferred", DEFERRED],
  ["select * from t", "replica", "transaction follows its first statement (read-only query)"],
  // The transaction is on a replica now: a later write goes there too (and fails there), as documented.
  ["update t set a = 1", "replica", IN_REPLICA],
  ["commit", "replica", IN_REPLICA],
  ["begin", "deferred", DEFERRED],
  ["update t set a = 1", "primary", "transaction follows its first statement (UPDATE writes)"],
  ["select 1", "primary", IN_PRIMARY],
  ["commit", "primary", IN_PRIMARY],
  ["begin read only", "replica", RO_TX],
  ["commit", "replica", IN_REPLICA],
  // READ WRITE says where the transaction belongs; SERIALIZABLE cannot run on a standby: neither is held back.
  ["begin read write", "primary", BEGIN_RW],
  ["commit", "primary", IN_PRIMARY],
  ["begin isolation level serializable", "primary", SERIALIZABLE],
  ["commit", "primary", IN_PRIMARY],
  ["start transaction", "deferred", DEFERRED],
  ["/* pgroute: primary */ select 1", "primary", "transaction follows its first statement (hint: primary)"],
  ["commit", "primary", IN_PRIMARY],
  ["begin", "deferred", DEFERRED],
  ["/* pgroute: replica */ delete from t", "refused", refused(writes("DELETE"))],
  ["select nextval('s')", "primary", "transaction follows its first statement (calls nextval(), which needs the primary)"],
  ["rollback", "primary", IN_PRIMARY],
  ["select 1", "replica", READ],
];

const USER_PRIMARY: Row[] = [
  ["select 1", "primary", "user's default target: primary"],
  ["begin read only", "primary", "user's default target: primary"],
  ["select 1", "primary", IN_PRIMARY],
  ["commit", "primary", IN_PRIMARY],
  ["begin", "primary", "user's default target: primary"],
  ["commit", "primary", IN_PRIMARY],
  ["/* pgroute: replica */ select 1", "replica", "hint: replica"],
  ["set pgroute.target = replica", "pgroute", PGROUTE],
  ["select 1", "replica", "SET pgroute.target = replica"],
  ["reset pgroute.target", "pgroute", PGROUTE],
  ["delete from t", "primary", "user's default target: primary"],
];

const USER_REPLICA: Row[] = [
  ["select 1", "replica", "user's default target: replica"],
  // A reporting user's own functions go to the replica: only definite writes do not.
  ["select my_func()", "replica", "user's default target: replica"],
  ["delete from t", "primary", writes("DELETE")],
  ["select nextval('s')", "primary", needsPrimary("nextval")],
  ["select * from t for share", "primary", lock("FOR SHARE")],
  ["begin", "primary", BEGIN_RW],
  ["select 1", "primary", IN_PRIMARY],
  ["commit", "primary", IN_PRIMARY],
  ["begin read only", "replica", RO_TX],
  ["commit", "replica", IN_REPLICA],
];

const FUNCTION_LISTS: Row[] = [
  ["select my_read_func()", "replica", READ],
  ["select app.my_read_func(1)", "replica", READ],
  ["select reports.monthly(2024)", "replica", READ],
  ["select other.monthly(2024)", "primary", unknown("other.monthly")],
  ["select audit_log('x')", "primary", needsPrimary("audit_log")],
  ["select app.touch(1)", "primary", needsPrimary("app.touch")],
  ["select touch(1)", "primary", unknown("touch")],
  // Listing a built-in as a write function sends it to the primary; listing one as a read function frees it.
  ["select now()", "primary", needsPrimary("now")],
  ["select pg_try_advisory_xact_lock(1)", "replica", READ],
  ["select my_func()", "primary", unknown("my_func")],
];

const NO_REPLICAS: Row[] = [
  ["select 1", "primary", "no healthy replica (wanted: read-only query)"],
  ["/* pgroute: replica */ select 1", "primary", "no healthy replica (wanted: hint: replica)"],
  ["begin read only", "primary", "no healthy replica (wanted: read-only transaction)"],
  ["select 1", "primary", IN_PRIMARY],
  ["commit", "primary", IN_PRIMARY],
  ["delete from t", "primary", writes("DELETE")],
  ["/* pgroute: replica */ delete from t", "refused", refused(writes("DELETE"))],
  ["set pgroute.target = replica", "pgroute", PGROUTE],
  ["select 1", "primary", "no healthy replica (wanted: SET pgroute.target = replica)"],
];

const NO_REPLICAS_FIRST_STATEMENT: Row[] = [
  ["begin", "deferred", DEFERRED],
  ["select 1", "primary", "transaction follows its first statement (no healthy replica (wanted: read-only query))"],
  ["commit", "primary", IN_PRIMARY],
];

/** Statements the parser rejects, between good ones: each is reported on its own, and the run exits 1. */
const PARSE_ERRORS: Row[] = [
  ["select 1", "replica", READ],
  ["select from where", "primary", `parse error: syntax error at or near "where"`],
  ["selec 1", "primary", `parse error: syntax error at or near "selec"`],
  ["select 2", "replica", READ],
  ["select 1abc", "primary", `parse error: trailing junk after numeric literal at or near "1abc"`],
  [`select ""`, "primary", `parse error: zero-length delimited identifier at or near """"`],
  ["insert into t values (", "primary", `parse error: syntax error at or near ";"`],
  ["select 3", "replica", READ],
];

const META_COMMANDS: Row[] = [
  ["\\set id 1", "skipped", "psql meta-command, not SQL"],
  ["select 1", "replica", READ],
  ["\\d t", "skipped", "psql meta-command, not SQL"],
  ["delete from t", "primary", writes("DELETE")],
];

const LISTS_TOML = `
[[nodes]]
name = "primary"

[[users]]
name = "app"
password = "x"

[[users]]
name = "admin"
password = "x"
target = "primary"

[[users]]
name = "reporting"
password = "x"
target = "replica"

[routing]
write_functions = ["app.touch", "audit_log", "now"]
read_functions = ["my_read_func", "reports.monthly", "pg_try_advisory_xact_lock"]
`;

const FIRST_TOML = `
[[nodes]]
name = "primary"

[routing]
transactions = "first-statement"
`;

interface Group {
  name: string;
  rows: Row[];
  /** Flags after `explain FILE --json`; `{dir}` is the temporary directory. */
  flags: string[];
  exit: number;
}

const GROUPS: Group[] = [
  { name: "default", rows: DEFAULT_ROWS, flags: [], exit: 0 },
  { name: "first-statement", rows: FIRST_STATEMENT, flags: ["--config", "{dir}/first.toml"], exit: 0 },
  { name: "user-primary", rows: USER_PRIMARY, flags: ["--config", "{dir}/lists.toml", "--user", "admin"], exit: 0 },
  { name: "user-replica", rows: USER_REPLICA, flags: ["--config", "{dir}/lists.toml", "--user", "reporting"], exit: 0 },
  { name: "function-lists", rows: FUNCTION_LISTS, flags: ["--config", "{dir}/lists.toml", "--user", "app"], exit: 0 },
  { name: "no-replicas", rows: NO_REPLICAS, flags: ["--no-replicas"], exit: 0 },
  { name: "no-replicas-first", rows: NO_REPLICAS_FIRST_STATEMENT, flags: ["--no-replicas", "--config", "{dir}/first.toml"], exit: 0 },
  { name: "parse-errors", rows: PARSE_ERRORS, flags: [], exit: 1 },
  { name: "meta-commands", rows: META_COMMANDS, flags: [], exit: 0 },
];

/** The script for `rows`, one row per line (a row's SQL may itself span lines). */
function script(rows: readonly Row[]): string {
  return rows.map(([sql]) => (sql.startsWith("\\") || sql.trimEnd().endsWith(";") ? sql : `${sql};`)).join("\n") + "\n";
}

/** A statement's text as explain echoes it: the script's text of the row, trimmed. */
const echoed = (row: Row) => (row[0].startsWith("\\") ? row[0] : script([row]).trim());

type JsonRow = Pick<ExplainRow, "line" | "sql" | "target" | "reason" | "transaction" | "error">;

let dir = "";
const results = new Map<string, { code: number; rows: JsonRow[]; stderr: string }>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "pgroute-explain-"));
  await writeFile(join(dir, "lists.toml"), LISTS_TOML);
  await writeFile(join(dir, "first.toml"), FIRST_TOML);
  await Promise.all(
    GROUPS.map(async (g) => {
      const file = join(dir, `${g.name}.sql`);
      await writeFile(file, script(g.rows));
      const flags = g.flags.map((f) => f.replace("{dir}", dir));
      const proc = Bun.spawn([...EXPLAIN, file, "--json", ...flags], { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      results.set(g.name, { code, rows: stdout.trim() ? (JSON.parse(stdout) as JsonRow[]) : [], stderr });
    }),
  );
  await loadParser();
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("the table has at least 200 statements", () => {
  expect(GROUPS.reduce((n, g) => n + g.rows.length, 0)).toBeGreaterThanOrEqual(200);
});

for (const g of GROUPS) {
  describe(`explain --json: ${g.name} (${g.rows.length} statements)`, () => {
    test(`every statement's target and reason; exit code ${g.exit}`, () => {
      const r = results.get(g.name)!;
      expect(r.stderr).toBe("");
      // Compared as whole triples so that a failure shows the statement next to what it got.
      expect(r.rows.map((x) => [x.sql, x.target, x.reason])).toEqual(g.rows.map((row) => [echoed(row), row[1], row[2]]));
      expect(r.code).toBe(g.exit);
    });

    test("lines count from 1 and follow the script; parse errors carry message and position", () => {
      const r = results.get(g.name)!;
      let line = 1;
      r.rows.forEach((x, i) => {
        // A row starts on its own line; a hint on a line of its own puts the statement's code one line further down.
        const first = g.rows[i]![0];
        const expected = /^--[^\n]*\n/.test(first) ? line + 1 : line;
        expect([x.sql, x.line]).toEqual([x.sql, expected]);
        line += script([g.rows[i]!]).split("\n").length - 1;
        expect(Boolean(x.error)).toBe(x.reason.startsWith("parse error"));
        if (x.error) {
          expect(x.reason).toBe(`parse error: ${x.error.message}`);
          expect(x.error.position).toBeGreaterThan(0);
          expect(x.error.position).toBeLessThanOrEqual(x.sql.length + 1);
        }
      });
    });

    test("the pure explainScript decides the same", async () => {
      const flags = g.flags.map((f) => f.replace("{dir}", dir));
      const at = (name: string) => (flags.includes(name) ? flags[flags.indexOf(name) + 1] : undefined);
      const config = at("--config") ? await loadConfig(at("--config")!) : null;
      const rows = explainScript(script(g.rows), optionsFrom(config, at("--user"), !flags.includes("--no-replicas")));
      const { rows: json } = results.get(g.name)!;
      expect(rows.map(({ line, sql, target, reason, transaction, error }) => ({ line, sql, target, reason, transaction, ...(error ? { error } : {}) }))).toEqual(json);
    });
  });
}

describe("explain --json: transaction column", () => {
  test("names the node of the open transaction, through COMMIT, and null outside", () => {
    const rows = results.get("default")!.rows;
    const at = (sql: string, from = 0) => rows.findIndex((r, i) => i >= from && r.sql === sql);
    const begin = at("begin read only;");
    expect(rows.slice(begin, begin + 6).map((r) => r.transaction)).toEqual(["replica", "replica", "replica", "replica", "replica", "replica"]);
    expect(rows[at("select 1;")]!.transaction).toBeNull();
  });
});

describe("explain: parse errors and exit codes", () => {
  test("message and 1-based position within the statement", () => {
    const rows = results.get("parse-errors")!.rows;
    const errors = rows.filter((r) => r.error).map((r) => [r.sql, r.error!.position]);
    expect(errors).toEqual([
      ["select from where;", 13],
      ["selec 1;", 1],
      ["select 1abc;", 8],
      [`select "";`, 8],
      ["insert into t values (;", 23],
    ]);
  });

  test("an unterminated quote runs to the end of the script, as in psql; the statements before it are judged", async () => {
    const file = join(dir, "unterminated.sql");
    await writeFile(file, "select 1;\n/* lead */\nselect 'open;\nselect 2;\n");
    const proc = Bun.spawnSync([...EXPLAIN, file, "--json"], { cwd: ROOT });
    const rows = JSON.parse(proc.stdout.toString()) as JsonRow[];
    expect(rows.map((r) => [r.line, r.sql, r.target])).toEqual([
      [1, "select 1;", "replica"],
      [3, "/* lead */\nselect 'open;\nselect 2;", "primary"],
    ]);
    expect(rows[1]!.error).toEqual({ message: `unterminated quoted string at or near "'open;\nselect 2;"`, position: 19 });
    expect(proc.exitCode).toBe(1);
  });

  test("an unterminated comment is an error, not an empty statement", async () => {
    const proc = Bun.spawnSync([...EXPLAIN, "-", "--json"], { cwd: ROOT, stdin: Buffer.from("select 1;\n/* open\n") });
    const rows = JSON.parse(proc.stdout.toString()) as JsonRow[];
    expect(rows.map((r) => [r.sql, r.target, r.reason])).toEqual([
      ["select 1;", "replica", READ],
      ["/* open", "primary", `parse error: unterminated /* comment at or near "/* open"`],
    ]);
    expect(proc.exitCode).toBe(1);
  });

  test("standard input, text output: exit 0 and the summary line", () => {
    const proc = Bun.spawnSync([...EXPLAIN, "-"], { cwd: ROOT, stdin: Buffer.from("select 1;\nbegin;\ndelete from t;\ncommit;\n\\x\n") });
    const out = proc.stdout.toString();
    expect(out).not.toContain("\x1b["); // not a terminal: no colours
    expect(out.trimEnd().split("\n").at(-1)).toBe(
      "4 statements: 3 to the primary, 1 to replicas; 1 psql meta-commands skipped; 3 inside transactions",
    );
    expect(proc.exitCode).toBe(0);
  });

  test("usage errors exit 2", async () => {
    const cases = [[], ["a.sql", "b.sql"], [join(dir, "missing.sql")], ["-", "--user", "admin"], ["-", "--config", join(dir, "lists.toml"), "--user", "nobody"]];
    for (const args of cases) {
      const proc = Bun.spawnSync([...EXPLAIN, ...args], { cwd: ROOT, stdin: Buffer.from("select 1;") });
      expect([args, proc.exitCode]).toEqual([args, 2]);
      expect(proc.stderr.toString()).not.toBe("");
    }
  });
});

describe("examples/explain", () => {
  test("every sample script runs cleanly: exit 0, no parse errors", async () => {
    const files = [...new Bun.Glob("*.sql").scanSync(join(ROOT, "examples/explain"))];
    expect(files).toContain("app.sql");
    for (const f of files) {
      const proc = Bun.spawnSync([...EXPLAIN, join(ROOT, "examples/explain", f), "--json"], { cwd: ROOT });
      const rows = JSON.parse(proc.stdout.toString()) as JsonRow[];
      expect([f, proc.exitCode, rows.filter((r) => r.error).length]).toEqual([f, 0, 0]);
    }
  });

  test("app.sql: reads to replicas, writes and their transaction to the primary, the reporting section to replicas", () => {
    const proc = Bun.spawnSync([...EXPLAIN, join(ROOT, "examples/explain/app.sql"), "--json"], { cwd: ROOT });
    const targets = (JSON.parse(proc.stdout.toString()) as JsonRow[]).map((r) => r.target);
    expect(targets).toEqual([
      "replica", "replica", "replica", // sign-in, catalogue, search
      "primary", "primary", // update, read-your-writes hint
      ...Array<string>(9).fill("primary"), // checkout transaction
      ...Array<string>(4).fill("replica"), // read-only history transaction
      "primary", // data-modifying CTE
      "pgroute", "replica", "replica", "pgroute", // reporting section
      "primary", "primary", "primary", "replica", "primary", "primary", // sequences, functions, settings, locks, LISTEN
    ]);
  });
});
