"""`python -m sfp <overrides>`: the same command line as the repository's main.py, from any directory."""
from .cli import main

if __name__ == "__main__":
    main()
