-- Imaging studies. A study refers to its patient by id only: patients live
-- in another service's schema, so there is no foreign key; existence is
-- checked over gRPC and deletions arrive as events (see deleted_patient).
-- Vocabulary is stored by readable name, never as bare integers, and a check
-- constraint keeps it closed.
create table studies.study (
    id bigint generated always as identity primary key,
    patient_id bigint not null,
    urgency_level text not null,
    body_part text not null,
    description text not null,
    study_type text not null,
    version bigint not null default 1,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    constraint study_patient_id_positive check (patient_id > 0),
    constraint study_urgency_level_known check (urgency_level in ('LOW', 'MID', 'HIGH')),
    constraint study_body_part_known check (body_part in (
        'STOMACH', 'NECK', 'CHEST', 'BREASTS', 'ABDOMEN', 'PELVIS', 'HEAD', 'BRAIN', 'SKULL',
        'CERVICAL_SPINE', 'THORACIC_SPINE', 'LUMBAR_SPINE', 'SPINE', 'HEART', 'SHOULDER', 'ELBOW',
        'WRIST', 'HAND', 'HIP', 'KNEE', 'ANKLE', 'FOOT', 'KIDNEY', 'LIVER'
    )),
    constraint study_study_type_known check (study_type in (
        'XRAY', 'MAMMOGRAM', 'CT', 'MRI', 'ULTRASOUND', 'PET', 'NUCLEAR_MEDICINE', 'FLUOROSCOPY',
        'ANGIOGRAPHY', 'BONE_DENSITOMETRY'
    )),
    constraint study_description_length check (char_length(description) between 1 and 2000)
);

-- The gateway asks for the studies of a whole page of patients at once;
-- this index serves that query and the per-patient cascade.
create index study_patient_id_id_idx on studies.study (patient_id, id);

create function studies.study_touch() returns trigger
language plpgsql as $$
begin
    new.version := old.version + 1;
    new.update_time := now();
    new.create_time := old.create_time;
    return new;
end
$$;

create trigger study_touch before update on studies.study
for each row execute function studies.study_touch();

-- Idempotency keys of CreateStudy (see patients.create_request).
create table studies.create_request (
    request_id text primary key,
    study_id bigint,
    create_time timestamptz not null default now(),
    constraint create_request_id_length check (char_length(request_id) between 1 and 128)
);

-- Secrets generated once; `page_token_key` signs page tokens.
create table studies.service_secret (
    name text primary key,
    value bytea not null
);

insert into studies.service_secret (name, value)
values (
    'page_token_key',
    decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
);

-- Patients known to be deleted, from patients-service's outbox. Creating or
-- moving a study to one of them is refused, which closes the race between a
-- create and the cascade.
create table studies.deleted_patient (
    patient_id bigint primary key,
    event_sequence bigint not null,
    delete_time timestamptz not null default now()
);

-- How far each event source has been applied. Advanced in the same
-- transaction as the effects of the events, so a crash never loses or
-- double-applies one (and applying twice changes nothing anyway).
create table studies.event_cursor (
    source text primary key,
    position bigint not null,
    update_time timestamptz not null default now()
);

insert into studies.event_cursor (source, position) values ('patients', 0);
