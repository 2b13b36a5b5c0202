"""`python -m harness` runs the CLI."""

from harness.cli import entry

if __name__ == "__main__":  # guarded: the tracking process (spawned) imports this module as __mp_main__
    entry()
