"""`python -m memguard.tools.cli`: the `memguard` command without its installed script."""

from memguard.tools.cli.main import main

raise SystemExit(main())
