from mtlskit.cli import main

raise SystemExit(main())
