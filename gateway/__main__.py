"""`python -m gateway` is the same as the `sensegate` console script."""

from gateway.commands.cli import main

raise SystemExit(main())
