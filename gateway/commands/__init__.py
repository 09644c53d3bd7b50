"""The command line: parsing and dispatch, and the commands that are not a daemon."""
