-- Step 2 of the shared part `changes`: a change may name the resource its
-- resource belongs to (`patients/12` for a study), so a consumer and the
-- audit trail know whose record a change is, also once it is purged.
alter table {schema}.change add column if not exists parent text;

drop function if exists {schema}.record_change(text, bigint, bigint);
create or replace function {schema}.record_change(kind text, resource_id bigint, revision bigint,
    parent text default null)
returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
    actor text := coalesce(nullif(current_setting('clinic.actor', true), ''), 'postgres:' || session_user);
begin
    insert into {schema}.change (kind, resource_id, revision, actor, cause, parent)
    values (kind, resource_id, revision, actor, nullif(current_setting('clinic.cause', true), ''), parent);
    perform pg_notify('{schema}_change_written', '');
end
$$;
