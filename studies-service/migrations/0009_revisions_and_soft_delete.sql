-- Every change kept (AIP-164 soft delete, revisions, a change feed), and
-- the cascade following patients-service's public change feed.
--
-- A delete marks the study (delete_time, and expire_time when it will be
-- purged); the row and its revisions stay until then. A study deleted with
-- its patient names that patient in delete_cause (`patients/12`), so
-- undeleting the patient restores exactly those studies, never ones deleted
-- on their own before.
alter table studies.study
    add column delete_time timestamptz,
    add column expire_time timestamptz,
    add column delete_cause text,
    add constraint study_deleted_expires check ((delete_time is null) = (expire_time is null)),
    add constraint study_cause_only_when_deleted check (delete_cause is null or delete_time is not null);
create index study_expire_time_idx on studies.study (expire_time) where expire_time is not null;

-- Each revision's full snapshot: revision n is the row at version n (the
-- etag). Written by the trigger below, so no write can skip it; erased with
-- the study when it is purged.
create table studies.study_revision (
    study_id bigint not null references studies.study (id) on delete cascade,
    revision bigint not null,
    kind text not null,
    actor text not null,
    cause text,
    revision_time timestamptz not null,
    patient_id bigint not null,
    urgency_level text not null,
    body_part text not null,
    description text not null,
    study_type text not null,
    create_time timestamptz not null,
    delete_time timestamptz,
    expire_time timestamptz,
    primary key (study_id, revision),
    constraint study_revision_kind_known check (kind in ('CREATED', 'UPDATED', 'DELETED', 'UNDELETED'))
);

-- Studies from before keep their current version as their first known
-- revision (earlier versions were overwritten then).
insert into studies.study_revision (study_id, revision, kind, actor, revision_time, patient_id,
    urgency_level, body_part, description, study_type, create_time)
select id, version, case when version = 1 then 'CREATED' else 'UPDATED' end, 'clinic:studies', update_time,
    patient_id, urgency_level, body_part, description, study_type, create_time
from studies.study;

-- The revision and the feed's change of every write, in the write's
-- transaction, by the transaction's actor and cause (clinic.actor,
-- clinic.cause). A purge leaves a change naming the study and its patient.
create function studies.study_revise() returns trigger
language plpgsql as $$
declare
    kind text;
begin
    if tg_op = 'DELETE' then
        perform studies.record_change('PURGED', old.id, old.version, 'patients/' || old.patient_id);
        return null;
    end if;
    kind := case
        when tg_op = 'INSERT' then 'CREATED'
        when old.delete_time is null and new.delete_time is not null then 'DELETED'
        when old.delete_time is not null and new.delete_time is null then 'UNDELETED'
        else 'UPDATED'
    end;
    perform studies.record_change(kind, new.id, new.version, 'patients/' || new.patient_id);
    insert into studies.study_revision (study_id, revision, kind, actor, cause, revision_time, patient_id,
        urgency_level, body_part, description, study_type, create_time, delete_time, expire_time)
    values (new.id, new.version, kind,
        coalesce(nullif(current_setting('clinic.actor', true), ''), 'postgres:' || session_user),
        nullif(current_setting('clinic.cause', true), ''),
        new.update_time, new.patient_id, new.urgency_level, new.body_part, new.description,
        new.study_type, new.create_time, new.delete_time, new.expire_time);
    return null;
end
$$;

create trigger study_revise after insert or update or delete on studies.study
for each row execute function studies.study_revise();

-- A tombstone now also says when the patient's studies expire (the
-- patient's expire_time, from the feed), and whether the patient was purged
-- (then the sweeper erases the studies instead of marking them deleted).
-- Tombstones confirmed by the outbox this release retires keep no outbox
-- position: the feed numbers from 1, and an undelete from it must lift them.
alter table studies.deleted_patient
    add column expire_time timestamptz,
    add column purged boolean not null default false;
update studies.deleted_patient set event_sequence = 0 where event_sequence is not null;
-- Deletions the outbox consumer had set aside for a retry become
-- tombstones here (their event cannot be read again).
insert into studies.deleted_patient (patient_id, event_sequence)
select patient_id, 0 from studies.event_retry
on conflict (patient_id) do update set event_sequence = 0, reserve_time = null;
delete from studies.event_retry;
-- The feed is a new source, read from its start.
insert into studies.event_cursor (source, position) values ('patients-feed', 0);

-- The studies clients see unless they ask for deleted ones: not deleted,
-- and none of a patient known to be deleted, whether or not the sweeper
-- has marked them yet. Updatable: updates and deletes go through it.
create or replace view studies.live_study as
select s.*
from studies.study s
where s.delete_time is null
  and not exists (select 1 from studies.deleted_patient d where d.patient_id = s.patient_id);

-- Every study with its deletion as clients see it: a study of a deleted
-- patient not swept yet is deleted as of the patient's deletion.
create view studies.known_study as
select s.id, s.patient_id, s.urgency_level, s.body_part, s.description, s.study_type, s.version,
    s.create_time, s.update_time,
    coalesce(s.delete_time, d.delete_time) as delete_time,
    coalesce(s.expire_time, d.expire_time, d.delete_time) as expire_time
from studies.study s
left join studies.deleted_patient d on d.patient_id = s.patient_id and s.delete_time is null;

do $$
declare
    runtime text := current_setting('clinic.runtime_role');
begin
    execute format('grant select, insert on studies.study_revision to %I', runtime);
    execute format('grant select on studies.known_study to %I', runtime);
end
$$;
