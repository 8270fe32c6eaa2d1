from lgp_edge.cli import main

raise SystemExit(main())
