import sys

from lwbatch.cli import main

sys.exit(main())
