"""``python -m smoltui.cli``: the same command line as ``python -m smoltui`` and the ``smoltui`` script."""

from smoltui.cli import main

raise SystemExit(main())
