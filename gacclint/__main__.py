from gacclint.cli import main

main(prog_name="gacclint")
