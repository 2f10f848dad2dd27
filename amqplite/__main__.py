"""`python -m amqplite` runs the command line."""

import gc

gc.disable()  # imports make long-lived objects only; main() turns collection on (serve: later)
from amqplite.cli.main import main  # noqa: E402

raise SystemExit(main())
