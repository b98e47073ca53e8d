import sys

from ringport.bench.common import run_from_bytecode
from ringport.bench.runner import main

if __name__ == "__main__":
    if not {"--load", "--list", "-h", "--help"} & set(sys.argv[1:]):
        run_from_bytecode(sys.argv[1:])
    sys.exit(main())
