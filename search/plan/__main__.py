"""`python -m search.plan --data DIR`: see `search.plan.command`."""

import sys

from search.plan.command import main

sys.exit(main())
