"""Operations on jobs from any process (a web app, a script, the CLI, a worker's sweeper):
listing and inspection views, retry, cancel, requeue, the dead letters, retention,
messages to a job, and the event stream. They work on the SQL state only."""
