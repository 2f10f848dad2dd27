"""amqplite.management."""
