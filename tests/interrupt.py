"""Interrupting a training run at a chosen step, as a killed job would be (not collected by pytest:
no ``test_`` prefix): :func:`stop_at_call` wraps a loss function so that its n-th call raises
:class:`Interrupted`."""


class Interrupted(Exception):
    pass


def stop_at_call(n):
    """A loss wrapper that raises Interrupted on the n-th step."""
    def wrapper(loss_fn):
        calls = [0]

        def wrapped(batch):
            calls[0] += 1
            if calls[0] == n:
                raise Interrupted
            return loss_fn(batch)
        return wrapped
    return wrapper
