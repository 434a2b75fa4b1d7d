-- The patients schema's own tables, as of the release that squashed
-- migrations 0001-0008 into this one (a schema that has those adopts this
-- baseline without running it; see clinic_pg::schema). The tables every
-- service's schema holds - the audit trail, request ids, the service secret,
-- row versions - are not here: the crates that use them define them once
-- and the migrate step applies them after these (shared parts).

-- Patients, the people imaging studies are made to. Ids come from an
-- identity column: server-assigned, positive, never reused. `version` backs
-- the etag (kept by the shared part row_versions).
--
-- Search (ListPatients' filter and order_by) compares names and emails by a
-- folded key: decomposed, without accents, lower-cased, so "JOSÉ", "jose"
-- and "José" are one key. The service computes keys in Rust (the fold it
-- applies to what a filter compares them with) on every insert and update;
-- keys use the C collation, so one btree index serves equality, prefix
-- (`like 'trev%'`) and the keyset order with `id`.
create table patients.patient (
    id bigint generated always as identity primary key,
    first_name text not null,
    last_name text not null,
    birth_date date not null,
    email text not null,
    version bigint not null default 1,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    first_name_key text collate "C" not null,
    last_name_key text collate "C" not null,
    email_key text collate "C" not null,
    search_version smallint not null default 1,
    constraint patient_first_name_length check (char_length(first_name) between 1 and 100),
    constraint patient_last_name_length check (char_length(last_name) between 1 and 100),
    constraint patient_birth_date_range check (birth_date >= date '1900-01-01'),
    constraint patient_email_length check (char_length(email) between 3 and 254)
);

-- Emails are unique ignoring case. The index, not a check-then-insert, is
-- what enforces it, so concurrent creates cannot both win; the service maps
-- a violation of this index by name to ALREADY_EXISTS.
create unique index patient_email_lower_key on patients.patient (lower(email));

-- Rows inserted behind the service's back (bulk loads) get approximate keys
-- at once (search_version 0) and exact ones from the service soon after.
create function patients.patient_search_keys() returns trigger
language plpgsql as $$
begin
    if new.first_name_key is null or new.last_name_key is null or new.email_key is null then
        new.first_name_key := coalesce(new.first_name_key, lower(new.first_name));
        new.last_name_key := coalesce(new.last_name_key, lower(new.last_name));
        new.email_key := coalesce(new.email_key, lower(new.email));
        new.search_version := 0;
    end if;
    return new;
end
$$;

create trigger patient_search_keys before insert on patients.patient
for each row execute function patients.patient_search_keys();

create index patient_last_name_key_idx on patients.patient (last_name_key, id);
create index patient_first_name_key_idx on patients.patient (first_name_key, id);
create index patient_email_key_idx on patients.patient (email_key, id);
create index patient_birth_date_idx on patients.patient (birth_date, id);
create index patient_create_time_idx on patients.patient (create_time, id);
create index patient_update_time_idx on patients.patient (update_time, id);
create index patient_search_version_idx on patients.patient (id) where search_version = 0;

-- The outbox: facts other services must act on, written in the same
-- transaction as the change itself, so a committed delete always has its
-- event and a rolled-back one never does. studies-service reads it through
-- PatientEventService and keeps its own cursor. Writers take a
-- transaction-scoped advisory lock before drawing a sequence, so events
-- commit in sequence order and a reader that remembers the last sequence it
-- saw can never miss a later-committing lower one.
create table patients.patient_event (
    sequence bigint generated always as identity primary key,
    patient_id bigint not null,
    event_type text not null,
    create_time timestamptz not null default now(),
    constraint patient_event_type_known check (event_type in ('deleted'))
);

-- The runtime role (named by the migrate step in clinic.runtime_role) owns
-- nothing and gets exactly this; the shared parts grant their own tables.
do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('grant select, insert, update, delete on patients.patient to %I', runtime);
    -- Written with each delete, read by studies-service's cascade.
    execute format('grant select, insert on patients.patient_event to %I', runtime);
end
$$;
