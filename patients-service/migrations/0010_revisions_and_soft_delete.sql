-- Every change kept (AIP-164 soft delete, revisions, a change feed).
--
-- A delete marks the patient (delete_time, and expire_time when it will be
-- purged); the row and its revisions stay until then. An email belongs to
-- one live patient: a deleted patient's email can be taken by a new one
-- (and then the deleted one cannot be undeleted).
alter table patients.patient
    add column delete_time timestamptz,
    add column expire_time timestamptz,
    add constraint patient_deleted_expires check ((delete_time is null) = (expire_time is null));

create unique index patient_live_email_key on patients.patient (lower(email)) where delete_time is null;
drop index patients.patient_email_lower_key;
create index patient_expire_time_idx on patients.patient (expire_time) where expire_time is not null;

-- Each revision's full snapshot: revision n is the row at version n (the
-- etag). Written by the trigger below, so no write can skip it; erased with
-- the patient when it is purged.
create table patients.patient_revision (
    patient_id bigint not null references patients.patient (id) on delete cascade,
    revision bigint not null,
    kind text not null,
    actor text not null,
    revision_time timestamptz not null,
    first_name text not null,
    last_name text not null,
    birth_date date not null,
    email text not null,
    create_time timestamptz not null,
    delete_time timestamptz,
    expire_time timestamptz,
    primary key (patient_id, revision),
    constraint patient_revision_kind_known check (kind in ('CREATED', 'UPDATED', 'DELETED', 'UNDELETED'))
);

-- Patients from before keep their current version as their first known
-- revision (earlier versions were overwritten then); the feed starts here.
insert into patients.patient_revision (patient_id, revision, kind, actor, revision_time, first_name,
    last_name, birth_date, email, create_time)
select id, version, case when version = 1 then 'CREATED' else 'UPDATED' end, 'clinic:patients', update_time,
    first_name, last_name, birth_date, email, create_time
from patients.patient;

-- The revision and the feed's change of every write, in the write's
-- transaction, by the same actor as record_change names. A purge leaves a
-- change naming ids only.
create function patients.patient_revise() returns trigger
language plpgsql as $$
declare
    kind text;
begin
    if tg_op = 'DELETE' then
        perform patients.record_change('PURGED', old.id, old.version);
        return null;
    end if;
    kind := case
        when tg_op = 'INSERT' then 'CREATED'
        when old.delete_time is null and new.delete_time is not null then 'DELETED'
        when old.delete_time is not null and new.delete_time is null then 'UNDELETED'
        else 'UPDATED'
    end;
    perform patients.record_change(kind, new.id, new.version);
    insert into patients.patient_revision (patient_id, revision, kind, actor, revision_time, first_name,
        last_name, birth_date, email, create_time, delete_time, expire_time)
    values (new.id, new.version, kind,
        coalesce(nullif(current_setting('clinic.actor', true), ''), 'postgres:' || session_user),
        new.update_time, new.first_name,
        new.last_name, new.birth_date, new.email, new.create_time, new.delete_time, new.expire_time);
    return null;
end
$$;

create trigger patient_revise after insert or update or delete on patients.patient
for each row execute function patients.patient_revise();

do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('grant select, insert on patients.patient_revision to %I', runtime);
end
$$;
