-- ListAuditEvents pages newest first by (time, id): ids follow insertion,
-- not time (each replica stamps its own events), so the gateway's merge of
-- both services by time needs each service's pages in time order.
create index audit_event_time_id_idx on studies.audit_event (time, id);
create index audit_event_subject_time_id_idx on studies.audit_event (subject, time, id);
drop index studies.audit_event_time_idx;
drop index studies.audit_event_subject_idx;
