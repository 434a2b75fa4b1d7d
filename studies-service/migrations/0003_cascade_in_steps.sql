-- The delete cascade in steps, so it can neither stall nor leak.
--
-- A row in deleted_patient now means "no study may belong to this patient
-- any more", from one of two sources:
--   * a deletion event applied from patients-service's outbox
--     (event_sequence set), or
--   * a reservation by a non-forced DeletePatient that found no studies
--     (event_sequence null, reserve_time set) - confirmed by the deletion
--     event, or lifted if the patient turns out to still exist.
-- Studies of such patients are hidden at once (view live_study) and removed
-- later in small chunks by a sweeper (swept, sweep_attempts, sweep_after),
-- so one patient with many studies never holds up another's deletion.
alter table studies.deleted_patient alter column event_sequence drop not null;
alter table studies.deleted_patient add column reserve_time timestamptz;
-- Rows from before this migration were deleted in one go: already swept.
alter table studies.deleted_patient add column swept boolean not null default true;
alter table studies.deleted_patient alter column swept set default false;
alter table studies.deleted_patient add column sweep_attempts integer not null default 0;
alter table studies.deleted_patient add column sweep_after timestamptz not null default now();
create index deleted_patient_unswept_idx on studies.deleted_patient (sweep_after)
    where not swept and event_sequence is not null;
create index deleted_patient_reserved_idx on studies.deleted_patient (reserve_time)
    where event_sequence is null;

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
