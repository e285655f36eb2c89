"""``python -m patchlog``: the same CLI as the ``patchlog`` console script."""

from patchlog.ops.cli import main

if __name__ == "__main__":
    main()
