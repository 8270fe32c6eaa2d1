from lgp_edge.cli import program

program()
