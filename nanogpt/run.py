"""`python -m nanogpt.run SPEC [key=value ...]`: the short form of `nanogpt run`.

Also what torchrun launches: `torchrun --standalone --nproc_per_node=8 -m nanogpt.run SPEC`.
"""

import sys

from nanogpt.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
