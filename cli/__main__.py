"""`python -m cli`: the `precompute` command, for where the console script is not on PATH."""

from cli.main import main

raise SystemExit(main())
