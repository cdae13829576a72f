import sys

from .delayline import main

sys.exit(main(sys.argv[1:]))
