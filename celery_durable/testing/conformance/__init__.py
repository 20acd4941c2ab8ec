"""The storage conformance suite, in parts; ``celery_durable.testing.StorageConformance``
puts them together."""
