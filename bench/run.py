"""Run the benchmark suite from a clone: python bench/run.py [options of python -m ringport.bench]

Uses an installed ringport, or the clone's src/ (built in place) when ringport is not installed.
"""
import os
import sys

if __name__ == "__main__":
    try:
        import ringport  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "src"))
    from ringport.bench.runner import main
    sys.exit(main())
