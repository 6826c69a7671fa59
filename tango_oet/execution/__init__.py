"""Execution layer: worker processes that run user scripts, their pool and their supervisor.

Import submodules directly; this package's `__init__` stays empty so that a worker process
(possibly under an environment's own interpreter) imports only what it needs.
"""
