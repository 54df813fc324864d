"""The HTTP lookup API that answers from the precomputed predictions."""
