"""The Spark batch jobs (ingest, score, publish, train) and the batch-side library they share."""
