-- The lookup API reads as precompute_reader, which cannot see the API key hashes. This function
-- answers one question for it, "which live key has this hash, and what may it do?", without
-- exposing the table: it runs with its owner's rights, and only the reader may call it.

CREATE FUNCTION precompute.api_key_for(hash text)
RETURNS TABLE (key_id bigint, name text, scopes text[])
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.key_id, k.name, k.scopes FROM precompute.api_keys k
     WHERE k.key_sha256 = hash AND k.revoked_at IS NULL
$$;
COMMENT ON FUNCTION precompute.api_key_for(text) IS
    'The live API key with this SHA-256 (hex), and its scopes; empty when none or revoked.';
REVOKE ALL ON FUNCTION precompute.api_key_for(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION precompute.api_key_for(text) TO precompute_reader, precompute_writer;
