"""The local platform: an embedded PostgreSQL, process supervision, an Airflow REST client and
the demo. Nothing in production imports it."""
