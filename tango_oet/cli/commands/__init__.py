"""One module per group of `tango-oet` subcommands; a command is `f(args, out) -> exit code`."""
