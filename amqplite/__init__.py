"""amqplite: an AMQP 0-9-1 message broker in Python on trio."""

__version__ = "0.1.0"

__all__ = ["__version__"]
