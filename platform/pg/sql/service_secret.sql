-- Secrets a service generates for itself once. `page_token_key` signs page
-- tokens, so tokens survive restarts and work on every replica without any
-- configuration. The service reads them; nobody writes them after this.
--
-- Step 1 of the shared part `service_secret`; written to find its objects
-- already there and leave them (and the key) as they are.
create table if not exists {schema}.service_secret (
    name text primary key,
    value bytea not null
);

insert into {schema}.service_secret (name, value)
values (
    'page_token_key',
    decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
)
on conflict (name) do nothing;

do $$
begin
    execute format('grant select on {schema}.service_secret to %I', current_setting('clinic.runtime_role'));
end
$$;
