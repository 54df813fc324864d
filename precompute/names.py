"""Names and limits the jobs, the lookup API, the command line and the DAGs share: each is
written here once (the database's CHECKs say the same in sql/)."""

from __future__ import annotations

# The alias whose version serves lookups and answers score requests, and the one a training run
# registers a candidate under.
CHAMPION = "champion"
CHALLENGER = "challenger"

# Model and alias names (the CHECKs in sql/0002_model_registry.sql).
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"

# API key scopes (the CHECK in sql/0005_api_keys_and_score_requests.sql).
READ_SCOPE = "predictions:read"
SUBMIT_SCOPE = "score-requests:write"
SCOPES = (READ_SCOPE, SUBMIT_SCOPE)
