-- Succeeded operations are most of the table and their entries the busiest end of the status
-- index: it leaves them out (one entry fewer to write per operation). Listing succeeded ones
-- walks the id index instead, where nearly every row matches; queries for the other statuses
-- say `status <> 'succeeded'` so that this index serves them.
DROP INDEX operations_status;
CREATE INDEX operations_status ON operations (status, id) WHERE status <> 'succeeded';
