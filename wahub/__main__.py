from wahub.cli import main

raise SystemExit(main())
