"""Mechanisms every step shares, one of each: the one-line user error and its formatter (`errors`), atomic files and
directories and the check that an output path may be replaced (`files`), and Hub errors and uploads (`hub`).

Imports nothing else from `pipeline`: every step may import it.
"""
