"""`python -m amqplite` runs the command line."""

import gc

gc.disable()  # importing the command line makes long-lived objects only: nothing to collect
from amqplite.cli.main import main  # noqa: E402

gc.enable()
raise SystemExit(main())
