import sys

from properties.mutation.runner import main

sys.exit(main())
