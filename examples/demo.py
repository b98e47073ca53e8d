"""A short tour of ringport's ports (core only; the workers tour replaces this)."""
import threading
import time

import ringport


def echo(port):
    for msg in port:  # until the other end closes
        port.post_message(msg)


def main():
    ch = ringport.MessageChannel()
    t = threading.Thread(target=echo, args=(ch.port2,))
    t.start()
    ch.port1.post_message({"task": "processData", "payload": [1, 2, 3, 4, 5]})
    print("echoed:", ch.port1.receive(timeout=5))
    n = 20000
    t0 = time.perf_counter()
    for i in range(n):
        ch.port1.post_message(i)
        ch.port1.receive()
    print(f"round trip: {(time.perf_counter() - t0) / n * 1e6:.2f} us")
    ch.port1.close()
    t.join()


if __name__ == "__main__":
    main()
