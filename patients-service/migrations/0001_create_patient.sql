-- Patients, the people imaging studies are made to.
-- Ids come from an identity column: server-assigned, positive, never reused.
-- `version` backs the etag; a trigger bumps it and `update_time` on every
-- update so no code path can forget to.
create table patients.patient (
    id bigint generated always as identity primary key,
    first_name text not null,
    last_name text not null,
    birth_date date not null,
    email text not null,
    version bigint not null default 1,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    constraint patient_first_name_length check (char_length(first_name) between 1 and 100),
    constraint patient_last_name_length check (char_length(last_name) between 1 and 100),
    constraint patient_birth_date_range check (birth_date >= date '1900-01-01'),
    constraint patient_email_length check (char_length(email) between 3 and 254)
);

-- Emails are unique ignoring case. The index, not a check-then-insert, is
-- what enforces it, so concurrent creates cannot both win; the service maps
-- a violation of this index by name to ALREADY_EXISTS.
create unique index patient_email_lower_key on patients.patient (lower(email));

create function patients.patient_touch() returns trigger
language plpgsql as $$
begin
    new.version := old.version + 1;
    new.update_time := now();
    new.create_time := old.create_time;
    return new;
end
$$;

create trigger patient_touch before update on patients.patient
for each row execute function patients.patient_touch();

-- Idempotency keys of CreatePatient, kept durably: a repeated key returns the
-- patient the first create made. The key row is inserted before the patient,
-- in the same transaction, so a concurrent repeat waits for the first and
-- then finds its result.
create table patients.create_request (
    request_id text primary key,
    patient_id bigint,
    create_time timestamptz not null default now(),
    constraint create_request_id_length check (char_length(request_id) between 1 and 128)
);

-- Secrets the service generates for itself once. `page_token_key` signs page
-- tokens, so tokens survive restarts and work on every replica without any
-- configuration.
create table patients.service_secret (
    name text primary key,
    value bytea not null
);

insert into patients.service_secret (name, value)
values (
    'page_token_key',
    decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
);
