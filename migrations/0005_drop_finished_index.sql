-- The retention purge walks the oldest ids instead (an operation finished before the cutoff
-- was created before it, and ids sort by creation time): one index entry fewer to write for
-- every operation that finishes.
DROP INDEX operations_finished;
