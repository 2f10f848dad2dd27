"""`python -m amqplite` runs the command line."""

from amqplite.cli.main import main

raise SystemExit(main())
