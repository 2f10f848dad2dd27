"""amqplite.session."""
