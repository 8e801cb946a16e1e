-- Every operation belongs to a tenant; those stored before tenants existed are the default
-- tenant's. Each list query of the API is confined to one tenant and stays an index walk:
-- newest first by (tenant, id); by kind by (tenant, kind, id); by status by (status, tenant,
-- id), whose leading status also serves the scheduler's start-up reads of every tenant.
ALTER TABLE operations ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX operations_tenant ON operations (tenant, id);
DROP INDEX operations_kind;
CREATE INDEX operations_kind ON operations (tenant, kind, id);
DROP INDEX operations_status;
CREATE INDEX operations_status ON operations (status, tenant, id) WHERE status <> 'succeeded';

-- Idempotency keys are per tenant: the same key in two tenants makes two operations.
CREATE TABLE idempotency_keys_by_tenant (
    tenant        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    request       TEXT    NOT NULL,                 -- canonical JSON of the request body
    operation_id  TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
);
INSERT INTO idempotency_keys_by_tenant (tenant, key, request, operation_id, created_at)
    SELECT 'default', key, request, operation_id, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_by_tenant RENAME TO idempotency_keys;
CREATE INDEX idempotency_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_operation ON idempotency_keys (operation_id);
