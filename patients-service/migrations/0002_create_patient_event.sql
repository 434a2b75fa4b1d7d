-- The outbox: facts other services must act on, written in the same
-- transaction as the change itself, so a committed delete always has its
-- event and a rolled-back one never does. studies-service reads it through
-- PatientEventService and keeps its own cursor.
--
-- Writers take a transaction-scoped advisory lock before drawing a sequence,
-- so events commit in sequence order and a reader that remembers the last
-- sequence it saw can never miss a later-committing lower one.
create table patients.patient_event (
    sequence bigint generated always as identity primary key,
    patient_id bigint not null,
    event_type text not null,
    create_time timestamptz not null default now(),
    constraint patient_event_type_known check (event_type in ('deleted'))
);
