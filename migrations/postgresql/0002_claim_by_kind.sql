-- Claims walk each kind's pending operations by priority, then age, so that a claim reads only
-- what it takes: a backlog of one kind (or of a limited kind at its limit) is not scanned by
-- the claims of the others.
DROP INDEX operations_claim;
CREATE INDEX operations_claim ON operations (kind, priority DESC, row_id) WHERE status = 'pending';

-- The next delayed retry to wake up for: only operations that wait for a time are in it (new
-- ones have run_after 0), so that it is small and no claim takes it to walk the queue.
DROP INDEX operations_due;
CREATE INDEX operations_delayed ON operations (run_after) WHERE status = 'pending' AND run_after > 0;
