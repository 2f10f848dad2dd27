"""amqplite.management: the HTTP management endpoint (API, metrics, SQS-style messaging, dashboard)."""

from amqplite.management.app import ManagementApp
from amqplite.management.http import HttpError, HttpLimits, Request, Response
from amqplite.management.server import run_management

__all__ = ["HttpError", "HttpLimits", "ManagementApp", "Request", "Response", "run_management"]
