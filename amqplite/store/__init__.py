"""amqplite.store."""
