-- A run claims score requests with a lease instead of for as long as it is not marked failed: a
-- run that dies without saying so (killed, its machine gone) leaves its requests to the next run
-- once the lease runs out. Each claim counts as an attempt, and a request claimed too many times
-- without a publish fails with the reason, so no single request can fail run after run.

ALTER TABLE precompute.score_requests
    ADD COLUMN claimed_until timestamptz,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0);
-- Requests claimed before leases existed get the lease a claim gives by default, counted once.
UPDATE precompute.score_requests
   SET claimed_until = updated_at + interval '1 hour', attempts = 1
 WHERE state = 'scoring';
ALTER TABLE precompute.score_requests
    ADD CONSTRAINT score_requests_lease_check
        CHECK (state <> 'scoring' OR claimed_until IS NOT NULL);
-- Runs look for claims that ran out next to the pending requests.
CREATE INDEX score_requests_claimed ON precompute.score_requests (model_id, claimed_until)
    WHERE state = 'scoring';
COMMENT ON COLUMN precompute.score_requests.claimed_until IS
    'While scoring: when the claiming run''s lease ends and another run may take the request.';
COMMENT ON COLUMN precompute.score_requests.attempts IS
    'Runs that have claimed the request; past PRECOMPUTE_SCORE_REQUEST_MAX_ATTEMPTS it fails.';
