-- A cancel of a running operation is answered 202 once it is recorded here: a server that
-- stops before the job has stopped (kill -9, or a shutdown that hands it back as pending)
-- cancels it at its next start instead of running it again.
ALTER TABLE operations ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
