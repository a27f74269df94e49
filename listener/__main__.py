import sys

from listener.main import main

sys.exit(main())
