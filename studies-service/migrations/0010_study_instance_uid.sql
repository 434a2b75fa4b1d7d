-- A study's DICOM Study Instance UID, the key an imaging archive knows it
-- by: '' when not known. A UID names one study in the world, so it stays
-- with its study while that is kept, deleted or not, and is free again only
-- once the study is purged.
alter table studies.study add column study_instance_uid text not null default '';
alter table studies.study_revision add column study_instance_uid text not null default '';

create unique index study_instance_uid_key on studies.study (study_instance_uid) where study_instance_uid <> '';

-- The views gain the column (`s.*` was expanded when the view was made).
create or replace view studies.live_study as
select s.*
from studies.study s
where s.delete_time is null
  and not exists (select 1 from studies.deleted_patient d where d.patient_id = s.patient_id);

create or replace view studies.known_study as
select s.id, s.patient_id, s.urgency_level, s.body_part, s.description, s.study_type, s.version,
    s.create_time, s.update_time,
    coalesce(s.delete_time, d.delete_time) as delete_time,
    coalesce(s.expire_time, d.expire_time, d.delete_time) as expire_time,
    s.study_instance_uid
from studies.study s
left join studies.deleted_patient d on d.patient_id = s.patient_id and s.delete_time is null;

-- Revisions keep the UID with the rest of the snapshot.
create or replace function studies.study_revise() returns trigger
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
        urgency_level, body_part, description, study_type, study_instance_uid, create_time, delete_time,
        expire_time)
    values (new.id, new.version, kind,
        coalesce(nullif(current_setting('clinic.actor', true), ''), 'postgres:' || session_user),
        nullif(current_setting('clinic.cause', true), ''),
        new.update_time, new.patient_id, new.urgency_level, new.body_part, new.description,
        new.study_type, new.study_instance_uid, new.create_time, new.delete_time, new.expire_time);
    return null;
end
$$;
