"""amqplite.cli."""
