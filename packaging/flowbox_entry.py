"""The executable's entry point (PyInstaller runs this file as __main__)."""

import multiprocessing

from flowbox.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the model worker processes start this executable again
    main()
