"""``python -m hora``: see ``hora.cli``."""

from hora.cli import main


if __name__ == "__main__":
    raise SystemExit(main())
