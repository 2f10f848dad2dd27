"""Example Celery application on amqplite (see README.md)."""
