-- The audit trail: one row per rpc that read or changed patient data (who,
-- which method, which patients, the outcome, the request id). Append-only:
-- the service's own role may insert and read, but not update; deleting is
-- refused by a trigger except for rows past the retention floor (30 days),
-- and only while the service prunes (the setting clinic.audit_pruning is on
-- in the pruning transaction). The role owns the schema, so it could undo
-- this with DDL; the service never runs DDL after its migrations.
create table patients.audit_event (
    id bigint generated always as identity primary key,
    time timestamptz not null default clock_timestamp(),
    subject text not null,
    method text not null,
    patient_ids bigint[] not null,
    code text not null,
    request_id text not null
);

-- "Who saw or changed patient N, and when": newest first per patient.
create index audit_event_patient_ids_idx on patients.audit_event using gin (patient_ids);
create index audit_event_subject_idx on patients.audit_event (subject, id);
create index audit_event_time_idx on patients.audit_event (time);

create function patients.audit_event_append_only() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' and current_setting('clinic.audit_pruning', true) = 'on' then
        if old.time < now() - interval '30 days' then
            return old;
        end if;
    end if;
    raise exception 'audit events are append-only' using errcode = 'insufficient_privilege';
end
$$;

create trigger audit_event_append_only before update or delete on patients.audit_event
for each row execute function patients.audit_event_append_only();
create trigger audit_event_no_truncate before truncate on patients.audit_event
for each statement execute function patients.audit_event_append_only();

do $$
begin
    execute format('revoke update, truncate on patients.audit_event from public, %I', current_user);
end
$$;
