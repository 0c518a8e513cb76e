"""``python -m coordinator.nodes ROLE``: run one node daemon."""

from coordinator.nodes._daemon import main

raise SystemExit(main())
