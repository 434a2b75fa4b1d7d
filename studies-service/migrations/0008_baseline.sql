-- The studies schema's own tables, as of the release that squashed
-- migrations 0001-0007 into this one (a schema that has those adopts this
-- baseline without running it; see clinic_pg::schema). The tables every
-- service's schema holds - the audit trail, request ids, the service secret,
-- row versions - are not here: the crates that use them define them once
-- and the migrate step applies them after these (shared parts).

-- Imaging studies. A study refers to its patient by id only: patients live
-- in another service's schema, so there is no foreign key; existence is
-- checked over gRPC and deletions arrive as events (see deleted_patient).
-- Vocabulary is stored by readable name, never as bare integers, and a check
-- constraint keeps it closed. `version` backs the etag (kept by the shared
-- part row_versions).
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

-- The delete cascade, in steps so it can neither stall nor leak. A row here
-- means "no study may belong to this patient any more", from one of two
-- sources:
--   * a deletion event applied from patients-service's outbox
--     (event_sequence set), or
--   * a reservation by a non-forced DeletePatient that found no studies
--     (event_sequence null, reserve_time set) - confirmed by the deletion
--     event, or lifted if the patient turns out to still exist.
-- Creating or moving a study to such a patient is refused, which closes the
-- race between a create and the cascade. Their studies are hidden at once
-- (view live_study) and removed later in small chunks by a sweeper (swept,
-- sweep_attempts, sweep_after), so one patient with many studies never holds
-- up another's deletion.
create table studies.deleted_patient (
    patient_id bigint primary key,
    event_sequence bigint,
    delete_time timestamptz not null default now(),
    reserve_time timestamptz,
    swept boolean not null default false,
    sweep_attempts integer not null default 0,
    sweep_after timestamptz not null default now()
);
create index deleted_patient_unswept_idx on studies.deleted_patient (sweep_after)
    where not swept and event_sequence is not null;
create index deleted_patient_reserved_idx on studies.deleted_patient (reserve_time)
    where event_sequence is null;

-- How far each event source has been applied. Advanced in the same
-- transaction as the effects of the events, so a crash never loses or
-- double-applies one (and applying twice changes nothing anyway).
create table studies.event_cursor (
    source text primary key,
    position bigint not null,
    update_time timestamptz not null default now()
);

insert into studies.event_cursor (source, position) values ('patients', 0);

-- Events whose application failed: retried with backoff while the cursor
-- moves on, so one bad event cannot hold up the ones behind it.
create table studies.event_retry (
    sequence bigint primary key,
    patient_id bigint not null,
    attempts integer not null default 1,
    retry_after timestamptz not null,
    last_error text not null,
    create_time timestamptz not null default now()
);

-- The studies clients may see: none of a patient known to be deleted,
-- whether or not the sweeper has removed them yet. Reads, updates and
-- deletes go through this view (it is updatable), so GetStudy, ListStudies,
-- UpdateStudy and DeleteStudy answer as if those studies were gone.
create view studies.live_study as
select s.*
from studies.study s
where not exists (select 1 from studies.deleted_patient d where d.patient_id = s.patient_id);

-- The runtime role (named by the migrate step in clinic.runtime_role) owns
-- nothing and gets exactly this; the shared parts grant their own tables.
do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('grant select, insert, update, delete on studies.study to %I', runtime);
    execute format('grant select, update, delete on studies.live_study to %I', runtime);
    -- The cascade's state: tombstones and reservations, its cursor, retries.
    execute format('grant select, insert, update, delete on studies.deleted_patient to %I', runtime);
    execute format('grant select, insert, update on studies.event_cursor to %I', runtime);
    execute format('grant select, insert, update, delete on studies.event_retry to %I', runtime);
end
$$;
