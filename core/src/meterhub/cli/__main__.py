"""``python -m meterhub.cli``: the ``meterhub`` script."""

from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
