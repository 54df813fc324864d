-- Callbacks are delivered outside any transaction: a deliverer claims due callbacks with a lease
-- in a short transaction (two deliverers never post the same one, and one that dies leaves its
-- callbacks to the next once the lease runs out), posts without holding a lock, and records each
-- outcome, with the reason of a failed delivery, in a short transaction of its own.

ALTER TABLE precompute.score_requests
    ADD COLUMN callback_claimed_until timestamptz,
    ADD COLUMN callback_error text;
COMMENT ON COLUMN precompute.score_requests.callback_claimed_until IS
    'While a deliverer posts the callback: when its claim ends and another may take it.';
COMMENT ON COLUMN precompute.score_requests.callback_error IS
    'Why the last callback delivery failed; null once delivered.';
