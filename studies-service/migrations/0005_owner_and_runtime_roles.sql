-- The schema now belongs to an owner role that only migrations use
-- (`studies-service migrate`); the service connects as a runtime role that
-- owns nothing and gets exactly the rights below. Before this, the service's
-- own role owned its tables and could disable the audit trail's triggers,
-- grant itself UPDATE or DELETE on it, or set the pruning switch and delete.
-- The migrate step names the runtime role in the setting clinic.runtime_role
-- (migrations fail without it, so they cannot run by accident as the service).
do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('grant usage on schema studies to %I', runtime);
    execute format('grant select, insert, update, delete on studies.study to %I', runtime);
    -- Reads, updates and deletes of studies go through this view.
    execute format('grant select, update, delete on studies.live_study to %I', runtime);
    execute format('grant select, insert, update, delete on studies.create_request to %I', runtime);
    -- The cascade's state: tombstones and reservations, its cursor, retries.
    execute format('grant select, insert, update, delete on studies.deleted_patient to %I', runtime);
    execute format('grant select, insert, update on studies.event_cursor to %I', runtime);
    execute format('grant select, insert, update, delete on studies.event_retry to %I', runtime);
    execute format('grant select on studies.service_secret to %I', runtime);
    -- The audit trail: append and read, nothing else.
    execute format('grant select, insert on studies.audit_event to %I', runtime);
    -- The service checks at start-up that its schema holds every migration.
    execute format('grant select on studies._sqlx_migrations to %I', runtime);
end
$$;

-- How long audit events are kept: set by the migrate step (as the owner,
-- from AUDIT_RETENTION_DAYS), read by the pruning function; never below 30
-- days, never writable by the service.
create table studies.audit_retention (
    days integer not null default 2190,
    only_row boolean primary key default true,
    constraint audit_retention_one_row check (only_row),
    constraint audit_retention_floor check (days >= 30)
);
insert into studies.audit_retention default values;

-- Append-only, also for the owner: no update, no truncate, and a delete only
-- of an event past the retention (the pruning function below is the only
-- caller that has DELETE). The old pruning switch (clinic.audit_pruning) is
-- gone: any session can set a custom setting.
create or replace function studies.audit_event_append_only() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
    if tg_op = 'DELETE'
        and old.time < now() - make_interval(days => (select days from studies.audit_retention)) then
        return old;
    end if;
    raise exception 'audit events are append-only' using errcode = 'insufficient_privilege';
end
$$;

-- Pruning past the retention, for the service (which has no DELETE): at most
-- `batch` of the oldest events past the retention the owner set, and an
-- event of its own naming how many went. Runs with the owner's rights, on a
-- fixed search_path so no object of the caller's can stand in for ours.
create function studies.prune_audit_events(batch integer) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    retention integer := (select days from studies.audit_retention);
    pruned bigint;
begin
    delete from studies.audit_event
    where id in (
        select id from studies.audit_event
        where time < now() - make_interval(days => retention)
        order by id
        limit least(greatest(batch, 1), 10000)
    );
    get diagnostics pruned = row_count;
    if pruned > 0 then
        insert into studies.audit_event (subject, method, patient_ids, code, request_id)
        values ('clinic:studies', format('prune %s audit events older than %s days', pruned, retention),
                '{}', 'OK', gen_random_uuid()::text);
    end if;
    return pruned;
end
$$;

do $$
begin
    execute 'revoke all on function studies.prune_audit_events(integer) from public';
    execute format('grant execute on function studies.prune_audit_events(integer) to %I',
                   current_setting('clinic.runtime_role'));
end
$$;
