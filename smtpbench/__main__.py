"""``python -m smtpbench`` and the ``smtpbench`` command (``[project.scripts]`` points here).

The import of the command-line module takes ~0.4 s (numpy, pydantic's models): a Ctrl-C then
exits 130 without a traceback. Worker processes are spawned and re-import this module: the
command runs only as ``__main__``.
"""

try:
    from .cli import program
except KeyboardInterrupt:
    raise SystemExit(130) from None


def run() -> None:
    """The ``smtpbench`` console script."""
    program()


if __name__ == "__main__":
    program()
