"""The file spark-submit runs (`postloan.py`), in a folder of its own.

Python puts the folder of the script it runs first on its path. Run from jobs/, the script would
import jobs/io.py for the standard library's `io` and jobs/collections.py for `collections`; this
folder holds nothing that shadows anything.
"""
