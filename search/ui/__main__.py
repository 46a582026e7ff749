"""`python -m search.ui`: see `search.ui.launcher`."""

import sys

from search.ui.launcher import main

sys.exit(main())
