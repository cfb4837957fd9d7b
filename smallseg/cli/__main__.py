from smallseg.cli import main

raise SystemExit(main())
