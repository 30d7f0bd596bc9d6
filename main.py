"""`python main.py ...` is the same as the `expotion-live` command."""
import sys

from expotion_live.cli import main

if __name__ == "__main__":
    sys.exit(main())
