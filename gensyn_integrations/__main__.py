"""``python -m gensyn_integrations``: the ``gensyn`` command line."""

from gensyn_integrations.cli import main

raise SystemExit(main())
