try:
    from .cli import program
except KeyboardInterrupt:  # Ctrl-C while the imports run (~0.4 s): no traceback for it
    raise SystemExit(130) from None

# Guarded: worker processes are spawned and re-import the main module.
if __name__ == "__main__":
    program()
