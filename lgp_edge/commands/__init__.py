"""One module per ``lgp-edge`` subcommand (see ``lgp_edge.cli``)."""
