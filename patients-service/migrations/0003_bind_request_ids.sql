-- Idempotency keys are bound to the request they were first used with: a
-- SHA-256 fingerprint of the create's validated fields, so the same key sent
-- with a different request is refused (REQUEST_ID_REUSED) instead of being
-- answered with an unrelated resource. Keys stored before this migration
-- have no fingerprint and match any request until they are pruned.
-- The id column takes one name in both services, so one piece of shared code
-- serves both; the index serves the service's pruning of expired keys.
alter table patients.create_request rename column patient_id to resource_id;
alter table patients.create_request add column fingerprint bytea;
create index create_request_create_time_idx on patients.create_request (create_time);
