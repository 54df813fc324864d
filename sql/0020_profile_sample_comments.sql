-- Batch quantiles and bin counts now come from a KLL sketch fed a uniform sample of at most
-- 200,000 accepted rows (jobs/profiles.py): the analyst-facing comments say how close they are.

COMMENT ON COLUMN precompute.feature_profiles.quantiles IS
    'Quantiles p01..p99 (numbers): exact for training; for batches from a KLL sketch of a '
    'uniform sample of at most 200,000 rows (rank within about 0.6% of the rows).';
COMMENT ON COLUMN analytics.feature_profiles.median IS
    'Median (numbers); for batches from a KLL sketch of a uniform sample of at most 200,000 '
    'rows (rank within about 0.6% of the rows, 99% confidence).';
