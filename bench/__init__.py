"""edgeft's benchmarks: each module compares edgeft with the strongest peer a user would pick, runs
everything in one process tree on the same inputs, interleaved, and writes JSON with the machine,
versions, command and git commit to bench/results/ (`python -m bench.NAME --help`). render.py turns
those JSON files into every results table of the README and docs/."""
