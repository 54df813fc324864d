"""Core shared by the batch jobs and the lookup API: settings, database, migrations, CLI."""
