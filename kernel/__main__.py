"""``python -m eventkernel`` is the ``eventkernel`` command."""

import sys

from eventkernel.cli import main

sys.exit(main())
