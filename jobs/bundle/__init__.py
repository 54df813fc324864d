"""MLeap bundles: reading them (`format`), checking and lowering them to array steps
(`program`), running those on Arrow batches on the CPU or a GPU (`runtime`, `trees`), and
writing them from a fitted training pipeline (`export`)."""
