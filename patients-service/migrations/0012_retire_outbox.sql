-- The outbox of deletions retires: studies-service's cascade follows the
-- public change feed (DELETED, UNDELETED, PURGED changes) instead. Upgrade
-- once studies-service has applied every outbox event (its metric
-- patient_events_pending is 0); its own migration turns the deletions it
-- had applied into tombstones the feed's undeletes can lift.
drop table patients.patient_event;
