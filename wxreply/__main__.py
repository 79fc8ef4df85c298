import sys

from wxreply.cli import main

sys.exit(main())
