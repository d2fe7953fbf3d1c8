"""The executable's entry point (PyInstaller runs this file as __main__)."""

from flowbox.cli.main import main

if __name__ == "__main__":
    main()
