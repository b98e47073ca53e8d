"""The worker side of ``ringport.joblib``: what a pool worker runs for one joblib batch.

This module must not import joblib: joblib does not load in a subinterpreter (it imports
faulthandler, which refuses to), so a subinterpreter worker gets the batch's calls alone, while
a process worker gets joblib's own ``BatchedCalls``, which sets the configuration nested
``Parallel`` calls see.  Both are pickled with cloudpickle (the package; with joblib before 1.6
and no package, the copy in joblib.externals for a process, plain pickle for a subinterpreter).
Results and exceptions go back pickled the same way, so values of classes defined in
``__main__`` come back as the parent's own classes (cloudpickle tracks them), as under loky.
"""
import pickle

__all__ = ["run_batch"]


def _dumps(codec):
    if codec == "joblib":
        from joblib.externals.cloudpickle import dumps
    elif codec == "cloudpickle":
        from cloudpickle import dumps
    else:
        dumps = pickle.dumps
    return dumps


def run_batch(codec, payload):
    """Run the joblib batch that payload pickles (codec: "joblib", "cloudpickle" or "pickle",
    the pickler the parent used).  Returns the same pickler's bytes of (True, results), or of
    (False, exception, formatted traceback), or, when the exception does not survive a pickle
    round trip, (False, (type name, message), formatted traceback)."""
    dumps = _dumps(codec)
    try:
        batch = pickle.loads(payload)
        del payload
        if isinstance(batch, list):     # the calls alone (a subinterpreter: no joblib here)
            out = [fn(*args, **kwargs) for fn, args, kwargs in batch]
        else:                           # joblib's BatchedCalls
            out = batch()
        del batch
        return dumps((True, out), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:            # (BaseExceptions, a terminate among them, go to the pool)
        import traceback
        text = "".join(traceback.format_exception(exc))
        try:
            data = dumps((False, exc, text), protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)          # an exception whose __init__ cannot rebuild it fails here
            return data
        except Exception:
            return dumps((False, (type(exc).__qualname__, str(exc)), text),
                         protocol=pickle.HIGHEST_PROTOCOL)
