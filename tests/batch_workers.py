"""Workers for batch tests: importable by name from spawned processes."""

import os

from rawdemosaic.batch import Result, convert_one


def crash_on_marked(task, opts):
    """Behaves like convert_one, but dies hard (as a decoder crash would) on files named *crash*."""
    if "crash" in os.path.basename(task.input):
        os.abort()
    return convert_one(task, opts)
