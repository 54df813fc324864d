"""The local platform: an embedded PostgreSQL, process supervision, an Airflow REST client and
the demo. No stage, job or route imports it: only the command line, for `db` and `demo`."""
