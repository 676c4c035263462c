from flumph.cli import main

raise SystemExit(main())
