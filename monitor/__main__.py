"""``python -m monitor`` is the same as the ``egress-monitor`` command."""

from monitor.cli.main import main

raise SystemExit(main())
