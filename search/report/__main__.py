"""`python -m search.report --study NAME`: see `search.report.study_report`."""

import sys

from search.report.study_report import main

sys.exit(main())
