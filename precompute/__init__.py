"""The core shared by the batch jobs and the lookup API: settings, errors, the database,
migrations, contracts and their one rule set, the serving store's layout, shared names. It
imports nothing of the project above it."""
