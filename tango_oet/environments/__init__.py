"""Git sources and isolated virtual environments for git scripts, cached per (repo, commit).

Pure Python (no `tango`): the service calls `EnvironmentManager` from its background threads.
"""

from tango_oet.environments.manager import EnvironmentManager
from tango_oet.environments.model import Environment, ProgressSink, ResolvedSource, no_progress

__all__ = ["Environment", "EnvironmentManager", "ProgressSink", "ResolvedSource", "no_progress"]
