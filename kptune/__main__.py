from kptune.cli import run

run()
