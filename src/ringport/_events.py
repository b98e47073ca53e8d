"""A small event emitter in Node's style (on/once/off/emit), shared by ports and workers."""
import threading

__all__ = ["Emitter"]


class _Once:
    __slots__ = ("listener", "emitter", "event")

    def __init__(self, emitter, event, listener):
        self.emitter = emitter
        self.event = event
        self.listener = listener

    def __call__(self, *args):
        self.emitter.off(self.event, self)
        return self.listener(*args)


class Emitter:
    """Listeners per event name, called in registration order.  Thread-safe registration."""

    __slots__ = ("_listeners", "_lock")

    def __init__(self):
        self._listeners = {}
        self._lock = threading.Lock()

    def on(self, event, listener):
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        with self._lock:
            self._listeners.setdefault(event, []).append(listener)

    def once(self, event, listener):
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        self.on(event, _Once(self, event, listener))

    def off(self, event, listener=None):
        """Remove one listener (matching a once() wrapper too), or all of event's listeners."""
        with self._lock:
            lst = self._listeners.get(event)
            if not lst:
                return
            if listener is None:
                del self._listeners[event]
                return
            for i, cur in enumerate(lst):
                if cur == listener or (isinstance(cur, _Once) and cur.listener == listener):
                    del lst[i]
                    break
            if not lst:
                del self._listeners[event]

    def count(self, event):
        with self._lock:
            return len(self._listeners.get(event, ()))

    def listeners(self, event):
        with self._lock:
            return list(self._listeners.get(event, ()))

    def emit(self, event, *args):
        """Call every listener of event; returns whether there was any."""
        lst = self.listeners(event)
        for listener in lst:
            listener(*args)
        return bool(lst)
