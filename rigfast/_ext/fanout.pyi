from collections import deque
from typing import Any, Callable

class Recipient:
    kind: int
    outbox: list | None
    dirty: bool
    closed: bool
    transport: Any
    wire: Any

def deliver(slots: list, sessions: dict, encode: Callable[[int, Recipient], Any], touched: deque) -> tuple[int, int, int, int]: ...
def flush_slice(touched: deque, n: int) -> None: ...
