-- The audit trail of a service's schema: one row per rpc that read or changed
-- patient data (who, which method, which patients, the outcome, the request
-- id). Append-only for every role: no update, no truncate, and a delete only
-- of an event past the retention the owner set (AUDIT_RETENTION_DAYS of the
-- migrate step, never below 30 days), through prune_audit_events, the only
-- caller with DELETE. The runtime role may insert and read, nothing else.
--
-- Step 1 of the shared part `audit_trail`; written to find its objects
-- already there (schemas migrated before the part existed) and leave them
-- as they are.
create table if not exists {schema}.audit_event (
    id bigint generated always as identity primary key,
    time timestamptz not null default clock_timestamp(),
    subject text not null,
    method text not null,
    patient_ids bigint[] not null,
    code text not null,
    request_id text not null
);

-- "Who saw or changed patient N": by patient; pages newest first by
-- (time, id), overall and per caller (ids follow insertion, not time: each
-- replica stamps its own events).
create index if not exists audit_event_patient_ids_idx on {schema}.audit_event using gin (patient_ids);
create index if not exists audit_event_time_id_idx on {schema}.audit_event (time, id);
create index if not exists audit_event_subject_time_id_idx on {schema}.audit_event (subject, time, id);

-- How long events are kept: written by the migrate step (as the owner),
-- read by the pruning function; not readable or writable by the service.
create table if not exists {schema}.audit_retention (
    days integer not null default 2190,
    only_row boolean primary key default true,
    constraint audit_retention_one_row check (only_row),
    constraint audit_retention_floor check (days >= 30)
);
insert into {schema}.audit_retention default values on conflict do nothing;

create or replace function {schema}.audit_event_append_only() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
    if tg_op = 'DELETE'
        and old.time < now() - make_interval(days => (select days from {schema}.audit_retention)) then
        return old;
    end if;
    raise exception 'audit events are append-only' using errcode = 'insufficient_privilege';
end
$$;

create or replace trigger audit_event_append_only before update or delete on {schema}.audit_event
for each row execute function {schema}.audit_event_append_only();
create or replace trigger audit_event_no_truncate before truncate on {schema}.audit_event
for each statement execute function {schema}.audit_event_append_only();

-- Pruning past the retention, for the service (which has no DELETE): at most
-- `batch` of the oldest events past the retention, and an event of its own
-- naming how many went. Runs with the owner's rights, on a fixed search_path
-- so no object of the caller's can stand in for ours.
create or replace function {schema}.prune_audit_events(batch integer) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    retention integer := (select days from {schema}.audit_retention);
    pruned bigint;
begin
    delete from {schema}.audit_event
    where id in (
        select id from {schema}.audit_event
        where time < now() - make_interval(days => retention)
        order by id
        limit least(greatest(batch, 1), 10000)
    );
    get diagnostics pruned = row_count;
    if pruned > 0 then
        insert into {schema}.audit_event (subject, method, patient_ids, code, request_id)
        values ('clinic:{schema}', format('prune %s audit events older than %s days', pruned, retention),
                '{}', 'OK', gen_random_uuid()::text);
    end if;
    return pruned;
end
$$;

do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('revoke update, truncate on {schema}.audit_event from public, %I', current_user);
    execute format('grant select, insert on {schema}.audit_event to %I', runtime);
    execute 'revoke all on function {schema}.prune_audit_events(integer) from public';
    execute format('grant execute on function {schema}.prune_audit_events(integer) to %I', runtime);
end
$$;
