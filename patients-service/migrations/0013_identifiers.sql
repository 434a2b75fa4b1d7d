-- Patient identifiers (a medical record number under the clinic's system
-- URI, a national id, ...): each kept as "system|value" (a URI holds no
-- `|`, so the first one separates them), in the order given. A pair belongs
-- to one live patient at a time, like an email: a deleted patient's
-- identifiers can be taken by a new patient (and then the deleted one
-- cannot be undeleted).
alter table patients.patient add column identifiers text[] not null default '{}';
alter table patients.patient_revision add column identifiers text[] not null default '{}';

-- `identifier = "system|value"` in filters.
create index patient_identifiers_idx on patients.patient using gin (identifiers);

-- Who holds each identifier now: the primary key decides, so two
-- concurrent writes of one identifier cannot both win.
create table patients.patient_identifier (
    identifier text primary key,
    patient_id bigint not null references patients.patient (id) on delete cascade
);
create index patient_identifier_patient_idx on patients.patient_identifier (patient_id);

-- Claims a live patient's identifiers in the write's transaction. A taken
-- one fails the write with a unique violation on `patient_identifier_key`
-- and no detail (the detail of a plain violation would quote the value
-- into logs).
create function patients.patient_claim_identifiers() returns trigger
language plpgsql as $$
declare
    claimed bigint;
begin
    if tg_op = 'UPDATE' and new.identifiers = old.identifiers
        and (new.delete_time is null) = (old.delete_time is null) then
        return null;
    end if;
    delete from patients.patient_identifier where patient_id = new.id;
    if new.delete_time is null and cardinality(new.identifiers) > 0 then
        insert into patients.patient_identifier (identifier, patient_id)
        select i, new.id from unnest(new.identifiers) as i
        on conflict do nothing;
        get diagnostics claimed = row_count;
        if claimed < cardinality(new.identifiers) then
            raise exception 'an identifier belongs to another patient'
                using errcode = 'unique_violation', constraint = 'patient_identifier_key';
        end if;
    end if;
    return null;
end
$$;

create trigger patient_claim_identifiers after insert or update of identifiers, delete_time on patients.patient
for each row execute function patients.patient_claim_identifiers();

-- Revisions keep the identifiers with the rest of the snapshot.
create or replace function patients.patient_revise() returns trigger
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
        last_name, birth_date, email, identifiers, create_time, delete_time, expire_time)
    values (new.id, new.version, kind,
        coalesce(nullif(current_setting('clinic.actor', true), ''), 'postgres:' || session_user),
        new.update_time, new.first_name,
        new.last_name, new.birth_date, new.email, new.identifiers, new.create_time, new.delete_time,
        new.expire_time);
    return null;
end
$$;

do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('grant select, insert, delete on patients.patient_identifier to %I', runtime);
end
$$;
