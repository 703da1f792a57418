"""`python -m faceapp ...`: see faceapp/cli.py."""

from faceapp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
