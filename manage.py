#!/usr/bin/env python3
"""Django's command-line utility for sshcontrol."""

import sys

from sshcontrol.cli import main

if __name__ == "__main__":
    sys.exit(main())
