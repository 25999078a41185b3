from smoltui.cli import main

raise SystemExit(main())
