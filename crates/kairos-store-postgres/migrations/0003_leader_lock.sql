-- Leadership after a crash: whether the leader held the session advisory lock on leadership
-- when it last renewed (see src/cluster.rs). While it is true, a candidate that gets the lock
-- knows that the leader's session has ended and may start a new term before the lease expires.
ALTER TABLE leader ADD COLUMN locked boolean NOT NULL DEFAULT false;
