import sys

from ledger.ops.cli import main

sys.exit(main())
