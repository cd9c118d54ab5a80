"""``python -m sshcontrol COMMAND``: the same as the ``sshcontrol`` console script."""

import sys

from sshcontrol.cli import main

sys.exit(main())
