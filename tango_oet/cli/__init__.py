"""The `tango-oet` command line: operator commands over the OETScheduler client (docs/cli.md)."""
