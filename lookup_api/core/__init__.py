"""What the routes stand on: the database pool, API keys, logging and metrics."""
