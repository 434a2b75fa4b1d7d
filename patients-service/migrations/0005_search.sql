-- Search (ListPatients' filter and order_by). Names and emails are compared
-- by a folded key: decomposed, without accents, lower-cased, so "JOSÉ",
-- "jose" and "José" are one key. The service computes keys in Rust (the same
-- fold it applies to what a filter compares them with) on every insert and
-- update. Keys use the C collation, so one btree index serves equality,
-- prefix (`like 'trev%'`) and the keyset order with `id`.
alter table patients.patient
    add column first_name_key text collate "C",
    add column last_name_key text collate "C",
    add column email_key text collate "C",
    add column search_version smallint not null default 0;

-- Rows written before: an approximation until the service recomputes their
-- keys (search_version 0 → 1) in the background right after start-up.
update patients.patient set
    first_name_key = lower(first_name),
    last_name_key = lower(last_name),
    email_key = lower(email);

alter table patients.patient
    alter column first_name_key set not null,
    alter column last_name_key set not null,
    alter column email_key set not null,
    alter column search_version set default 1;

-- Rows inserted behind the service's back (bulk loads) get approximate keys
-- at once and exact ones from the service soon after.
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
