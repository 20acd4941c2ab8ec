# The image docker-compose.yml runs the order example with: the package, its
# PostgreSQL and Redis extras, and the examples.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY celery_durable ./celery_durable
RUN pip install --no-cache-dir ".[postgres,redis]"
COPY examples ./examples
ENV PYTHONUNBUFFERED=1 ORDERS_DIR=/tmp
USER nobody
