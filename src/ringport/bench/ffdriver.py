"""Runs one faster-fifo measurement in this process and prints it as JSON (used by
ringport.bench.messaging): importing faster_fifo turns the GIL back on in a free-threaded
interpreter, so it must never be imported by the runner itself."""
import json
import sys


def main(argv):
    params = json.loads(argv[0])
    try:
        import faster_fifo  # noqa: F401
    except ImportError as e:
        print(json.dumps({"skip": f"faster-fifo does not import: {e}"}))
        return 0
    from ringport.bench.common import VerifyError
    from ringport.bench.messaging import FasterFifo, measure
    try:
        s = measure(FasterFifo, params["what"], *params["args"])
    except VerifyError as e:
        print(json.dumps({"verify_error": str(e)}))
        return 0
    print(json.dumps({"value": s.value, "n": s.n, "samples": s.samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
