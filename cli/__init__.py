"""The `precompute` command: one parser, its handlers grouped by what they act on."""
