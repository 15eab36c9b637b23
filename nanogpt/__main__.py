"""`python -m nanogpt VERB ...`"""

import sys

from nanogpt.cli import main

sys.exit(main())
