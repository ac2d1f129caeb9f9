"""``python -m kernel`` is the ``eventkernel`` command."""

import sys

from kernel.cli import main

sys.exit(main())
