"""tango-oet: a Tango Controls device server that executes observing scripts.

This top-level package imports nothing: worker processes (possibly running under another
interpreter) import only `tango_oet.scripting` and `tango_oet.execution.worker`.
"""

__version__ = "0.1.0"
