"""Script discovery without execution: what a script defines, read from its source (`ast`)."""

from tango_oet.discovery.catalog import MAX_FILE_BYTES, MAX_FILES, ScriptCatalog
from tango_oet.discovery.signatures import ScriptDescription, describe_source

__all__ = ["MAX_FILES", "MAX_FILE_BYTES", "ScriptCatalog", "ScriptDescription", "describe_source"]
