"""The database scheduler: schedule kinds as pure functions (``kinds``), definitions
(``definition``), the registry and management API (``registry``), the tick that fires
each nominal tick once across beats (``tick``), and ``beat_schedule`` taken over
(``beat_import``). ``celery beat -S durable`` is ``celery_durable.beat``."""
