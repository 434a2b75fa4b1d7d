-- The request ids of creates (idempotency keys), kept durably and per caller:
-- keys are (token subject, request id), so one caller can neither squat nor
-- replay another's. `fingerprint` (SHA-256 of the create's validated fields)
-- binds a key to the request it was first used with; `resource_id` is set
-- in the creating transaction; the time index serves pruning expired keys.
--
-- Step 1 of the shared part `request_ids`; written to find its objects
-- already there and leave them as they are.
create table if not exists {schema}.create_request (
    request_id text not null,
    resource_id bigint,
    create_time timestamptz not null default now(),
    fingerprint bytea,
    subject text not null,
    constraint create_request_id_length check (char_length(request_id) between 1 and 128),
    constraint create_request_pkey primary key (subject, request_id)
);
create index if not exists create_request_create_time_idx on {schema}.create_request (create_time);

do $$
begin
    execute format('grant select, insert, update, delete on {schema}.create_request to %I',
                   current_setting('clinic.runtime_role'));
end
$$;
