"""The tasks of the pool example: module-level functions, so every backend can import them."""


def count_primes(limit: int) -> int:
    """A CPU-bound task: how many primes are below limit."""
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, limit, i)))
    return sum(sieve)
