"""The execution of one durable job: the task base class, the runner, call() and the
steps that suspend, replay and determinism, leases, and the runtime seam the engine is
given (``runtime``)."""
