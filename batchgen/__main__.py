"""The `batchgen` command, also as `python -m batchgen`."""

import gc


def main() -> None:
    """Import the CLI with the collector paused, then run it."""
    # the imports make tens of thousands of objects that live as long as the process: a
    # collection during them, or any after, would only rescan those; frozen, none does
    gc.disable()
    try:
        from batchgen.cli import main as cli_main
    finally:
        gc.freeze()
        gc.enable()
    try:
        cli_main()
    finally:
        # the process is about to exit: the interpreter's last collection would only scan
        # objects that die with it, the more of them the bigger the run
        gc.freeze()


if __name__ == "__main__":
    main()
