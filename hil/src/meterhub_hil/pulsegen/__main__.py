"""``python -m meterhub_hil.pulsegen``: the same as the ``meterhub-pulsegen`` command."""

from .server import main

raise SystemExit(main())
