"""What runs inside `celery worker`: signal wiring, the recovery sweeper (and
heartbeats), the bounded warm shutdown, and the one-worker-per-queue supervisor."""
