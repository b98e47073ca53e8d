"""ringport on a Ray cluster: ``Worker(target, backend="ray")`` and ``WorkerPool(backend="ray")``
run workers in Ray actors on the cluster's nodes (``pip install 'ringport[ray]'``).

``init()`` starts or joins the cluster as ``ray.init`` does, and sets what ringport trusts there:
by default nothing that crosses between machines is unpickled (the codec's pickle fallback is off
on those links both ways, and a worker's error is rebuilt by type only for builtin exceptions).
``init(allow_pickle=True)`` trusts the cluster: values without a native form travel pickled, and
errors are unpickled.  Only for clusters whose every node you trust.
"""
import os

from ringport._ray import ALLOW_PICKLE_ENV, remote_pickle_allowed

__all__ = ["init", "pickle_allowed"]


def init(*args, allow_pickle=False, **kwargs):
    """``ray.init(*args, **kwargs)``, plus ringport's trust setting for the cluster (see the
    module's doc); returns what ray.init returns.  allow_pickle=True sets
    RINGPORT_RAY_ALLOW_PICKLE=1 in this process and in the actors' runtime environment."""
    import ray
    if allow_pickle:
        os.environ[ALLOW_PICKLE_ENV] = "1"
        runtime_env = dict(kwargs.pop("runtime_env", None) or {})
        env_vars = dict(runtime_env.get("env_vars") or {})
        env_vars[ALLOW_PICKLE_ENV] = "1"
        runtime_env["env_vars"] = env_vars
        kwargs["runtime_env"] = runtime_env
    else:
        os.environ.pop(ALLOW_PICKLE_ENV, None)
    return ray.init(*args, **kwargs)


def pickle_allowed():
    """Whether this process unpickles what comes from other machines (see init)."""
    return remote_pickle_allowed()
