-- Row versions of a schema's resource table ({table}): every update bumps
-- `version` (which backs the etag) and `update_time`, and keeps
-- `create_time`, whatever statement made it, so no code path can forget to.
--
-- Step 1 of the shared part `row_versions`; written to find its objects
-- already there and leave them as they are.
create or replace function {schema}.{table}_touch() returns trigger
language plpgsql as $$
begin
    new.version := old.version + 1;
    new.update_time := now();
    new.create_time := old.create_time;
    return new;
end
$$;

create or replace trigger {table}_touch before update on {schema}.{table}
for each row execute function {schema}.{table}_touch();
