-- Step 3 of the shared part `changes`: recording a change no longer
-- notifies. A NOTIFY takes a cluster-wide lock at commit that serialises
-- every notifying transaction (inserts fell to a third of their rate); the
-- services wake their sequencer in-process after they commit, and it looks
-- every second for writes made behind their back.
create or replace function {schema}.record_change(kind text, resource_id bigint, revision bigint,
    parent text default null)
returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
    actor text := coalesce(nullif(current_setting('clinic.actor', true), ''), 'postgres:' || session_user);
begin
    insert into {schema}.change (kind, resource_id, revision, actor, cause, parent)
    values (kind, resource_id, revision, actor, nullif(current_setting('clinic.cause', true), ''), parent);
end
$$;
