"""amqplite.config."""
