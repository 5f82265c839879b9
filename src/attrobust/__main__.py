"""``python -m attrobust`` (and ``torchrun -m attrobust``) runs the command line."""

from attrobust.cli import main

if __name__ == "__main__":
    main()
