-- The scheduler keeps its queue in memory and reads pending and running operations only at
-- start, which operations_status serves; one index fewer to update on every state change.
DROP INDEX operations_pending;
