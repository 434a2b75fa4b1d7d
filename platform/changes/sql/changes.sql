-- The change feed of a service's schema: one row per committed revision of
-- one of its resources (and one per purge), numbered after commit.
--
-- Writers (the resource table's revision trigger, through record_change)
-- insert rows without a sequence; the sequencer of some replica numbers them
-- right after they commit, one numbering at a time (an advisory lock), in
-- the order it finds them committed, from the counter in change_head. So
-- sequences have no gaps, increase in commit order, and a batch of them
-- becomes visible at once: a reader never sees n+1 before n. A rolled-back
-- write leaves no row to number.
--
-- Step 1 of the shared part `changes`.
create table if not exists {schema}.change (
    id bigint generated always as identity primary key,
    sequence bigint unique,
    kind text not null,
    resource_id bigint not null,
    revision bigint not null,
    actor text not null,
    -- Why a change was made for someone else's, e.g. `patients/12` for a
    -- study deleted with its patient.
    cause text,
    commit_time timestamptz,
    constraint change_kind_known check (kind in ('CREATED', 'UPDATED', 'DELETED', 'UNDELETED', 'PURGED')),
    constraint change_sequenced check ((sequence is null) = (commit_time is null))
);
create index if not exists change_unsequenced_idx on {schema}.change (id) where sequence is null;
create index if not exists change_commit_time_idx on {schema}.change (commit_time) where sequence is not null;

-- The last sequence handed out, and the newest one pruned past the feed's
-- retention (a consumer asking for changes after an older one has missed
-- some: OUT_OF_RANGE).
create table if not exists {schema}.change_head (
    only_row boolean primary key default true,
    sequence bigint not null default 0,
    pruned_through bigint not null default 0,
    constraint change_head_one_row check (only_row)
);
insert into {schema}.change_head default values on conflict do nothing;

-- Records a change made by the current transaction. The actor is the
-- transaction's `clinic.actor` setting, which the services set to the
-- caller's token subject in the writing statement itself; a write made
-- behind the services' back (a bulk load, an operator's fix) is the
-- database role's that made it (`postgres:<role>`), never someone else's.
-- The cause is `clinic.cause`, if any. Wakes the sequencers at commit.
create or replace function {schema}.record_change(kind text, resource_id bigint, revision bigint)
returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
    actor text := coalesce(nullif(current_setting('clinic.actor', true), ''), 'postgres:' || session_user);
begin
    insert into {schema}.change (kind, resource_id, revision, actor, cause)
    values (kind, resource_id, revision, actor, nullif(current_setting('clinic.cause', true), ''));
    perform pg_notify('{schema}_change_written', '');
end
$$;

do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('grant select, insert, update, delete on {schema}.change to %I', runtime);
    execute format('grant select, update on {schema}.change_head to %I', runtime);
end
$$;
