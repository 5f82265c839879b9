"""``python -m attrobust`` runs the command line."""

from attrobust.experiments.cli import main

if __name__ == "__main__":
    main()
