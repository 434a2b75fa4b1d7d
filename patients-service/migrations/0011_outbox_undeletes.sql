-- The outbox also tells when a deleted patient is restored, so
-- studies-service lifts the patient's tombstone and studies may refer to
-- them again.
alter table patients.patient_event drop constraint patient_event_type_known;
alter table patients.patient_event add constraint patient_event_type_known
    check (event_type in ('deleted', 'undeleted'));
