-- A create's request id is the caller's own: keys are (token subject,
-- request id), so one user can neither squat another's keys (making their
-- creates fail REQUEST_ID_REUSED) nor replay them to read what another
-- created. Keys stored before this had no subject: they take the empty one,
-- match nobody's, and are pruned after their retention like the rest.
alter table patients.create_request add column subject text not null default '';
alter table patients.create_request alter column subject drop default;
alter table patients.create_request drop constraint create_request_pkey;
alter table patients.create_request add constraint create_request_pkey primary key (subject, request_id);
